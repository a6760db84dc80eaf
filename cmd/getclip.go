package cmd

import (
	"cmp"
	"context"
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
	Stream  streamRef
	Range   fragmentRange
	OutFile string
}

func (o getClipOptions) validate() error {
	return cmp.Or(o.Stream.validate(),
		errorIf(o.Range.Start == "" || o.Range.End == "", "--start and --end are required"),
		o.Range.validate())
}

func newGetClipCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runGetClip, &cobra.Command{
		Use:   "get-clip --stream-name NAME --start T --end T [--timestamp-type server|producer] [-o FILE]",
		Short: "Download an MP4 clip of a time range",
		Long: `Download the fragments whose start time is in [--start, --end] as one MP4 file (GetClip).

Times are RFC 3339 (UTC when no zone is given), Unix seconds (1705489836.421) or relative to now
(now, -10m, -1h30m); the range may span at most 24 hours. As in KVS, the clip holds at most the
first 200 fragments or the first 100 MB of the range; for the rest, ask again with --start after
the clip's last fragment. The MP4 is fragmented (one fragment per KVS fragment), which every player
reads. Without -o it goes to stdout.`,
	})
	addStreamRefFlags(c, &o.Stream)
	o.Range.addFlags(c.Flags(), "earliest fragment start time (required)", "latest fragment start time (required)")
	c.Flags().StringVarP(&o.OutFile, "output-file", "o", "", "write the MP4 to this file instead of stdout")
	return c
}

func runGetClip(ctx context.Context, env *Env, o getClipOptions) error {
	from, to, tt, _ := o.Range.resolve(time.Now()) // checked by validate
	if err := checkOutputFile("--output-file", o.OutFile); err != nil {
		return err
	}
	am, err := newArchivedClient(ctx, env, o.Stream, types.APINameGetClip, "get-clip")
	if err != nil {
		return err
	}
	out, err := am.GetClip(ctx, &kinesisvideoarchivedmedia.GetClipInput{
		StreamName: o.Stream.name(),
		StreamARN:  o.Stream.arn(),
		ClipFragmentSelector: &amtypes.ClipFragmentSelector{
			FragmentSelectorType: amtypes.ClipFragmentSelectorType(tt),
			TimestampRange:       &amtypes.ClipTimestampRange{StartTimestamp: aws.Time(from), EndTimestamp: aws.Time(to)},
		},
	})
	if err != nil {
		return wrapAPI(err, "get-clip %s", o.Stream)
	}
	defer out.Payload.Close()
	what := "get-clip " + o.Stream.String()
	return writeOutput(env, o.OutFile, what, func(w io.Writer) error {
		n, err := io.Copy(w, out.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		env.Log.Info("get-clip", "stream", o.Stream.String(), "bytes", n, "content_type", aws.ToString(out.ContentType))
		return nil
	})
}
