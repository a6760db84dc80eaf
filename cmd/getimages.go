package cmd

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	amtypes "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
	"github.com/spf13/cobra"
)

// GetImages bounds (server/images.go): one request covers at most 300 s; samples are at least
// 200 ms apart, in whole milliseconds.
const (
	imagesWindow      = 300 * time.Second
	imagesMinInterval = 200 * time.Millisecond
	imagesPage        = 100
)

type getImagesOptions struct {
	Stream        streamRef
	Start, End    string
	TimestampType string
	Interval      time.Duration
	Format        string // jpeg or png
	Quality       int    // JPEG quality 1–100
	Width, Height int    // 0: the picture's size; height alone keeps the aspect ratio
	Dir           string
	Output        string // table or json
}

func (o getImagesOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if o.Start == "" || o.End == "" {
		return errors.New("--start and --end are required")
	}
	if _, _, err := timeRange(o.Start, o.End, time.Now()); err != nil {
		return err
	}
	if _, err := parseTimestampType(o.TimestampType); err != nil {
		return err
	}
	if o.Interval < imagesMinInterval || o.Interval%time.Millisecond != 0 {
		return fmt.Errorf("--interval %v: want at least 200ms, in whole milliseconds", o.Interval)
	}
	if _, err := imageFormat(o.Format); err != nil {
		return err
	}
	switch {
	case o.Quality < 1 || o.Quality > 100:
		return fmt.Errorf("--jpeg-quality %d: want 1 to 100", o.Quality)
	case o.Width < 0 || o.Width > 3840 || o.Height < 0 || o.Height > 2160:
		return fmt.Errorf("--width-pixels %d, --height-pixels %d: want up to 3840 and 2160", o.Width, o.Height)
	case o.Width > 0 && o.Height == 0:
		return errors.New("--width-pixels needs --height-pixels; give --height-pixels alone to keep the aspect ratio")
	case o.Dir == "":
		return errors.New("-o DIR is required: the directory to write the images to")
	}
	return validateOutput(o.Output, outputJSON, outputTable)
}

// imageFormat maps --format to the API value.
func imageFormat(s string) (amtypes.Format, error) {
	switch strings.ToUpper(s) {
	case "JPEG", "JPG":
		return amtypes.FormatJpeg, nil
	case "PNG":
		return amtypes.FormatPng, nil
	}
	return "", fmt.Errorf("--format %q: want jpeg or png", s)
}

func newGetImagesCmd(env *Env) *cobra.Command {
	var o getImagesOptions
	c := &cobra.Command{
		Use:   "get-images --stream-name NAME --start T --end T [--interval D] -o DIR [--format jpeg|png] [--output table|json]",
		Short: "Write images sampled from a time range to files",
		Long: `Write one image every --interval from --start to --end (both included) into DIR (GetImages),
as 000001.jpg, 000002.jpg, … numbered in time order (.png with --format png); samples without a
picture write no file.

Times are RFC 3339 (UTC when no zone is given), Unix seconds (1705489836.421) or relative to now
(now, -10m, -1h30m). A range longer than the 300 s one GetImages request covers is asked for in
steps of 300 s, the samples staying --interval apart throughout. Each image is the keyframe at or
before its sample, or the exact frame when the interval is shorter than the stream's keyframe
spacing. A sample with no media is NO_MEDIA; one whose media cannot be decoded is MEDIA_ERROR.

--output table (the default) lists each sample with its file or error; json prints
{"Images":[{"TimeStamp":…,"File":…} or {"TimeStamp":…,"Error":"NO_MEDIA"}]}, for scripts.
  kvs get-images --stream-name cam --start -10m --end now --interval 10s -o frames
  ffmpeg -framerate 10 -i frames/%06d.jpg timelapse.mp4`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError{err}
			}
			return runGetImages(c.Context(), env, o)
		},
	}
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.Start, "start", "", "time of the first sample (required)")
	f.StringVar(&o.End, "end", "", "no sample after this time (required)")
	f.StringVar(&o.TimestampType, "timestamp-type", "producer",
		"which clock the samples are on: producer (the video's own time) or server (arrival: a file uploaded faster than real time bunches up there)")
	f.DurationVar(&o.Interval, "interval", 3*time.Second, "time between samples (at least 200ms)")
	f.StringVar(&o.Format, "format", "jpeg", "image format: jpeg or png")
	f.IntVar(&o.Quality, "jpeg-quality", 80, "JPEG quality, 1 (smallest) to 100 (best)")
	f.IntVar(&o.Width, "width-pixels", 0, "image width (needs --height-pixels; default: the video's)")
	f.IntVar(&o.Height, "height-pixels", 0, "image height (alone: the width follows the video's aspect ratio)")
	f.StringVarP(&o.Dir, "output-dir", "o", "", "directory to write the images to, created if missing (required)")
	f.StringVar(&o.Output, "output", outputTable, "table or json")
	return c
}

// imageRecord is one sample as get-images reports it.
type imageRecord struct {
	TimeStamp string `json:"TimeStamp"`
	File      string `json:"File,omitempty"`
	Error     string `json:"Error,omitempty"`
}

func runGetImages(ctx context.Context, env *Env, o getImagesOptions) error {
	from, to, _ := timeRange(o.Start, o.End, time.Now()) // checked by validate
	from = from.Truncate(time.Millisecond)               // the API's precision: samples stay whole intervals apart
	tt, _ := parseTimestampType(o.TimestampType)
	format, _ := imageFormat(o.Format)
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("get-images %s: %w", o.Stream, err)
	}
	am, err := newArchivedClient(ctx, env, o.Stream, types.APINameGetImages, "get-images")
	if err != nil {
		return err
	}
	in := kinesisvideoarchivedmedia.GetImagesInput{
		StreamName: o.Stream.name(), StreamARN: o.Stream.arn(),
		ImageSelectorType: amtypes.ImageSelectorType(tt),
		SamplingInterval:  aws.Int32(int32(o.Interval.Milliseconds())),
		Format:            format,
		MaxResults:        aws.Int64(imagesPage),
	}
	ext := ".jpg"
	if format == amtypes.FormatJpeg {
		in.FormatConfig = map[string]string{"JPEGQuality": fmt.Sprint(o.Quality)}
	} else {
		ext = ".png"
	}
	if o.Height > 0 {
		in.HeightPixels = aws.Int32(int32(o.Height))
	}
	if o.Width > 0 {
		in.WidthPixels = aws.Int32(int32(o.Width))
	}
	// Windows of at most 300 s, each starting one interval after the last sample of the one before.
	perWindow := int64(imagesWindow/o.Interval) + 1
	var records []imageRecord
	written, noMedia, mediaError := 0, 0, 0
	for start := from; !start.After(to); start = start.Add(time.Duration(perWindow) * o.Interval) {
		end := start.Add(time.Duration(perWindow-1) * o.Interval)
		if end.After(to) {
			end = to
		}
		in.StartTimestamp, in.EndTimestamp = aws.Time(start), aws.Time(end)
		pages := kinesisvideoarchivedmedia.NewGetImagesPaginator(am, &in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return wrapAPI(err, "get-images %s", o.Stream)
			}
			for _, img := range page.Images {
				rec := imageRecord{TimeStamp: formatTime(aws.ToTime(img.TimeStamp)), Error: string(img.Error)}
				switch {
				case img.Error == amtypes.ImageErrorNoMedia:
					noMedia++
				case img.Error != "" || img.ImageContent == nil:
					mediaError++
					rec.Error = string(amtypes.ImageErrorMediaError)
				default:
					b, err := base64.StdEncoding.DecodeString(aws.ToString(img.ImageContent))
					if err != nil {
						return fmt.Errorf("get-images %s: image at %s: %w", o.Stream, rec.TimeStamp, err)
					}
					written++
					rec.File = filepath.Join(o.Dir, fmt.Sprintf("%06d%s", written, ext))
					if err := os.WriteFile(rec.File, b, 0o644); err != nil {
						return fmt.Errorf("get-images %s: %w", o.Stream, err)
					}
				}
				records = append(records, rec)
			}
		}
	}
	env.Log.Info("get-images", "stream", o.Stream.String(), "samples", len(records), "written", written,
		"no_media", noMedia, "media_error", mediaError, "dir", o.Dir)
	if o.Output == outputJSON {
		return writeJSON(env.Stdout, struct {
			Images []imageRecord `json:"Images"`
		}{records})
	}
	rows := make([][]string, len(records))
	for i, r := range records {
		rows[i] = []string{r.TimeStamp, r.File, r.Error}
	}
	return writeTable(env.Stdout, []string{"TIMESTAMP", "FILE", "ERROR"}, rows)
}
