package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	amtypes "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
	"github.com/spf13/cobra"
)

type getClipOptions struct {
	Stream        streamRef
	Start, End    string
	TimestampType string
	OutFile       string
}

func (o getClipOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if o.Start == "" || o.End == "" {
		return errors.New("--start and --end are required")
	}
	if _, err := parseTimestampType(o.TimestampType); err != nil {
		return err
	}
	_, _, err := timeRange(o.Start, o.End, time.Now())
	return err
}

func newGetClipCmd(env *Env) *cobra.Command {
	var o getClipOptions
	c := &cobra.Command{
		Use:   "get-clip --stream-name NAME --start T --end T [--timestamp-type server|producer] [-o FILE]",
		Short: "Download an MP4 clip of a time range",
		Long: `Download the fragments whose start time is in [--start, --end] as one MP4 file (GetClip).

Times are RFC 3339, Unix seconds (1705489836.421) or relative to now (now, -10m, -1h30m); the range
may span at most 24 hours. The MP4 is fragmented (one fragment per KVS fragment), which every player
reads; kvs streams it, so there is no size limit. Without -o it goes to stdout.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError{err}
			}
			return runGetClip(c.Context(), env, o)
		},
	}
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.Start, "start", "", "earliest fragment start time (required)")
	f.StringVar(&o.End, "end", "", "latest fragment start time (required)")
	f.StringVar(&o.TimestampType, "timestamp-type", "server", "which timestamp --start/--end select on: server or producer")
	f.StringVarP(&o.OutFile, "output-file", "o", "", "write the MP4 to this file instead of stdout")
	return c
}

// streamInput returns the StreamName/StreamARN pair of an archived-media request.
func (r streamRef) streamInput() (name, arn *string) { return r.name(), r.arn() }

func runGetClip(ctx context.Context, env *Env, o getClipOptions) (err error) {
	from, to, _ := timeRange(o.Start, o.End, time.Now()) // checked by validate
	tt, _ := parseTimestampType(o.TimestampType)
	if err := checkOutputFile("--output-file", o.OutFile); err != nil {
		return err
	}
	cl, err := newClient(ctx, env)
	if err != nil {
		return err
	}
	am, err := cl.Archived(ctx, o.Stream.String(), types.APINameGetClip)
	if err != nil {
		return wrapAPI(err, "get-clip %s", o.Stream)
	}
	name, arn := o.Stream.streamInput()
	out, err := am.GetClip(ctx, &kinesisvideoarchivedmedia.GetClipInput{
		StreamName: name,
		StreamARN:  arn,
		ClipFragmentSelector: &amtypes.ClipFragmentSelector{
			FragmentSelectorType: amtypes.ClipFragmentSelectorType(tt),
			TimestampRange:       &amtypes.ClipTimestampRange{StartTimestamp: aws.Time(from), EndTimestamp: aws.Time(to)},
		},
	})
	if err != nil {
		return wrapAPI(err, "get-clip %s", o.Stream)
	}
	defer out.Payload.Close()
	w, closeOut, err := createOutput(env, o.OutFile)
	if err != nil {
		return fmt.Errorf("get-clip %s: %w", o.Stream, err)
	}
	defer func() {
		if cerr := closeOut(); cerr != nil && err == nil {
			err = fmt.Errorf("get-clip %s: %w", o.Stream, cerr)
		}
	}()
	n, err := io.Copy(w, out.Payload)
	if err != nil {
		return fmt.Errorf("get-clip %s: %w", o.Stream, err)
	}
	env.Log.Info("get-clip", "stream", o.Stream.String(), "bytes", n, "content_type", aws.ToString(out.ContentType))
	return nil
}
