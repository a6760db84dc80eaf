package cmd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	amtypes "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/server"
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
(now, -10m, -1h30m); the range may span at most 24 hours. The MP4 is fragmented (one fragment per
KVS fragment), which every player reads. Without -o it goes to stdout.

As in KVS, the clip holds at most the first 200 fragments of the range (by the selected
timestamp), fewer when their sizes pass 100 MiB (the first always). After the download get-clip
lists the range's fragments (ListFragments) and, when the clip left some out, says so on stderr
with the --start that fetches the rest, e.g.
  kvs get-clip: the clip holds the first 200 of 3600 fragments (to 2026-12-07T10:03:20.000Z); for the rest run again with --start 2026-12-07T10:03:20.000Z
The exit status is 0 all the same; when the listing fails nothing is said (the reason is logged
at debug level).`,
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
	cl, err := newClient(ctx, env)
	if err != nil {
		return err
	}
	am, err := cl.Archived(ctx, o.Stream.String(), types.APINameGetClip)
	if err != nil {
		return wrapAPI(err, "get-clip %s", o.Stream)
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
	err = writeOutput(env, o.OutFile, what, func(w io.Writer) error {
		n, err := io.Copy(w, out.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		env.Log.Info("get-clip", "stream", o.Stream.String(), "bytes", n, "content_type", aws.ToString(out.ContentType))
		return nil
	})
	if err != nil {
		return err
	}
	warnClipCut(ctx, env, cl, o.Stream, from, to, tt)
	return nil
}

// warnClipCut tells the user on stderr when the clip of [from, to] left fragments out: it lists
// the range (ListFragments, the same stream, timestamp type and range), applies GetClip's rule
// (server.MaxClipFragments, server.MaxClipBytes; see clipCut) and prints one line with the
// --start that selects the first fragment left out. A listing that fails says nothing (debug log):
// the clip is downloaded all the same.
//
// Paging stops once more fragments than a clip holds have been listed, as long as every page
// came in timestamp order (kvs lists a range in (timestamp, number) order, so those are the
// range's first ones); KVS leaves the order unspecified, so a listing seen out of order is
// followed to its end (the range spans at most 24 hours). The total is exact only then; else the
// line says "at least N".
func warnClipCut(ctx context.Context, env *Env, cl *client.Client, stream streamRef, from, to time.Time, tt client.TimestampType) {
	at := clipTime(tt)
	stopped := false
	frags, err := cl.ListFragments(ctx, client.ListFragmentsInput{Stream: stream.String(), Start: from, End: to, Type: tt,
		Enough: func(listed []client.FragmentInfo) bool {
			stopped = len(listed) > server.MaxClipFragments && slices.IsSortedFunc(listed, func(a, b client.FragmentInfo) int { return at(a).Compare(at(b)) })
			return stopped
		}})
	if err != nil {
		env.Log.Debug("get-clip: cannot tell whether the clip holds the whole range", "stream", stream.String(), "error", err)
		return
	}
	kept, rest, ok := clipCut(frags, tt, server.MaxClipBytes)
	if !ok {
		return
	}
	total := strconv.Itoa(len(frags))
	if stopped {
		total = "at least " + total
	}
	// The clip's fragments end where its last one does; rest's timestamp, as listed (whole
	// milliseconds, rounded down), is at or before its own, and --start is inclusive, so it
	// selects rest and everything after it.
	fmt.Fprintf(env.Stderr, "kvs get-clip: the clip holds the first %d of %s fragments (to %s); for the rest run again with --start %s\n",
		len(kept), total, formatTime(at(kept[len(kept)-1]).Add(kept[len(kept)-1].Length)), formatTime(at(rest)))
}

// clipTime returns the timestamp a range of type tt selects on.
func clipTime(tt client.TimestampType) func(client.FragmentInfo) time.Time {
	if tt == client.ProducerTimestamp {
		return func(f client.FragmentInfo) time.Time { return f.ProducerTimestamp }
	}
	return func(f client.FragmentInfo) time.Time { return f.ServerTimestamp }
}

// clipCut applies GetClip's rule to the fragments of a range (server/clip.go, clipFragments): the
// first server.MaxClipFragments by the timestamp of tt (then by number), cut where their sizes
// pass maxBytes, the first always kept. It returns the clip's fragments and the first fragment
// left out; ok is false when the clip holds them all. frags is sorted in place.
func clipCut(frags []client.FragmentInfo, tt client.TimestampType, maxBytes int64) (kept []client.FragmentInfo, rest client.FragmentInfo, ok bool) {
	at := clipTime(tt)
	slices.SortStableFunc(frags, func(a, b client.FragmentInfo) int {
		return cmp.Or(at(a).Compare(at(b)), client.CompareFragmentNumbers(a.FragmentNumber, b.FragmentNumber))
	})
	var total int64
	for i, f := range frags {
		total += f.SizeBytes
		if i == server.MaxClipFragments || (i > 0 && total > maxBytes) {
			return frags[:i], f, true
		}
	}
	return frags, client.FragmentInfo{}, false
}
