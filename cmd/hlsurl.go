package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	amtypes "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
	"github.com/spf13/cobra"
)

type hlsURLOptions struct {
	Stream       streamRef
	PlaybackMode string
	Range        fragmentRange
	Expires      int
	MaxFragments int
}

func (o hlsURLOptions) mode() string { return strings.ToUpper(o.PlaybackMode) }

func (o hlsURLOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	switch start, end := o.Range.Start, o.Range.End; o.mode() {
	case "LIVE":
		if start != "" || end != "" {
			return errors.New("--start and --end are for --playback-mode LIVE_REPLAY or ON_DEMAND")
		}
	case "LIVE_REPLAY":
		if start == "" {
			return errors.New("--playback-mode LIVE_REPLAY needs --start")
		}
	case "ON_DEMAND":
		if start == "" || end == "" {
			return errors.New("--playback-mode ON_DEMAND needs --start and --end")
		}
	default:
		return fmt.Errorf("--playback-mode %q: want LIVE, LIVE_REPLAY or ON_DEMAND", o.PlaybackMode)
	}
	if err := o.Range.validate(); err != nil {
		return err
	}
	if o.Expires != 0 && (o.Expires < 300 || o.Expires > 43200) {
		return fmt.Errorf("--expires %d: want 300 to 43200 seconds", o.Expires)
	}
	if o.MaxFragments != 0 && (o.MaxFragments < 1 || o.MaxFragments > 5000) {
		return fmt.Errorf("--max-fragments %d: want 1 to 5000", o.MaxFragments)
	}
	return nil
}

func newHLSURLCmd(env *Env) *cobra.Command {
	var o hlsURLOptions
	c := newCommand(env, &o, runHLSURL, &cobra.Command{
		Use:   "hls-url --stream-name NAME [--playback-mode LIVE|LIVE_REPLAY|ON_DEMAND] [--start T --end T] [--expires N]",
		Short: "Print an HLS playback URL for a stream",
		Long: `Create an HLS streaming session (GetHLSStreamingSessionURL) and print its URL, which any HLS
player opens: ffplay, VLC, Safari, hls.js.

LIVE (the default) follows the newest fragments; LIVE_REPLAY starts at --start and plays on into
live; ON_DEMAND plays [--start, --end] (at most 24 hours). Times are RFC 3339, Unix seconds or
relative to now (-10m). The URL stays valid for --expires seconds (300 to 43200, default 300).

  ffplay "$(kvs hls-url --stream-name cam)"`,
	})
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.PlaybackMode, "playback-mode", "LIVE", "LIVE, LIVE_REPLAY or ON_DEMAND")
	o.Range.addFlags(f, "first fragment start time (LIVE_REPLAY, ON_DEMAND)", "last fragment start time (ON_DEMAND; optional for LIVE_REPLAY)")
	f.IntVar(&o.Expires, "expires", 0, "seconds the URL stays valid, 300 to 43200 (default 300)")
	f.IntVar(&o.MaxFragments, "max-fragments", 0, "MaxMediaPlaylistFragmentResults: fragments per media playlist (default 5 live, 1000 on demand)")
	return c
}

func runHLSURL(ctx context.Context, env *Env, o hlsURLOptions) error {
	from, to, tt, _ := o.Range.resolve(time.Now()) // checked by validate
	cl, err := newClient(ctx, env)
	if err != nil {
		return err
	}
	am, err := cl.Archived(ctx, o.Stream.String(), types.APINameGetHlsStreamingSessionUrl)
	if err != nil {
		return wrapAPI(err, "hls-url %s", o.Stream)
	}
	in := &kinesisvideoarchivedmedia.GetHLSStreamingSessionURLInput{
		StreamName:   o.Stream.name(),
		StreamARN:    o.Stream.arn(),
		PlaybackMode: amtypes.HLSPlaybackMode(o.mode()),
		HLSFragmentSelector: &amtypes.HLSFragmentSelector{
			FragmentSelectorType: amtypes.HLSFragmentSelectorType(tt),
		},
	}
	if !from.IsZero() {
		in.HLSFragmentSelector.TimestampRange = &amtypes.HLSTimestampRange{StartTimestamp: aws.Time(from)}
		if !to.IsZero() {
			in.HLSFragmentSelector.TimestampRange.EndTimestamp = aws.Time(to)
		}
	}
	if o.Expires != 0 {
		in.Expires = aws.Int32(int32(o.Expires))
	}
	if o.MaxFragments != 0 {
		in.MaxMediaPlaylistFragmentResults = aws.Int64(int64(o.MaxFragments))
	}
	out, err := am.GetHLSStreamingSessionURL(ctx, in)
	if err != nil {
		return wrapAPI(err, "hls-url %s", o.Stream)
	}
	_, err = fmt.Fprintln(env.Stdout, aws.ToString(out.HLSStreamingSessionURL))
	return err
}
