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
	// ContainerFormat is hls-url's --container-format: FRAGMENTED_MP4 or MPEG_TS ("": the
	// service's default, FRAGMENTED_MP4).
	ContainerFormat string
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
	switch strings.ToUpper(o.ContainerFormat) {
	case "", "FRAGMENTED_MP4", "MPEG_TS":
	default:
		return fmt.Errorf("--container-format %q: want FRAGMENTED_MP4 or MPEG_TS", o.ContainerFormat)
	}
	return nil
}

func newHLSURLCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runHLSURL, &cobra.Command{
		Use:   "hls-url --stream-name NAME [--playback-mode LIVE|LIVE_REPLAY|ON_DEMAND] [--start T --end T] [--expires N] [--container-format FRAGMENTED_MP4|MPEG_TS]",
		Short: "Print an HLS playback URL for a stream",
		Long: `Create an HLS streaming session (GetHLSStreamingSessionURL) and print its URL, which any HLS
player opens: ffplay, VLC, Safari, hls.js.

` + sessionURLHelp + `

Segments are fragmented MP4 (FRAGMENTED_MP4, the default); --container-format MPEG_TS serves
MPEG-2 transport stream segments instead, for players that play only those (older set-top boxes
and TVs), at a few percent more bytes (more for low bit rates).

  ffplay "$(kvs hls-url --stream-name cam)"`,
	})
	addSessionURLFlags(c, o, "MaxMediaPlaylistFragmentResults: fragments per media playlist (default 5 live, 1000 on demand)")
	c.Flags().StringVar(&o.ContainerFormat, "container-format", "", "FRAGMENTED_MP4 or MPEG_TS (default FRAGMENTED_MP4)")
	return c
}

func newDASHURLCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runDASHURL, &cobra.Command{
		Use:   "dash-url --stream-name NAME [--playback-mode LIVE|LIVE_REPLAY|ON_DEMAND] [--start T --end T] [--expires N]",
		Short: "Print an MPEG-DASH playback URL for a stream",
		Long: `Create an MPEG-DASH streaming session (GetDASHStreamingSessionURL) and print its manifest's URL,
which a DASH player opens (kvs is tested with ffplay's and GStreamer's). Each track is an
adaptation set of its own.

` + sessionURLHelp + `

  ffplay "$(kvs dash-url --stream-name cam)"`,
	})
	addSessionURLFlags(c, o, "MaxManifestFragmentResults: fragments per manifest (default 5 live, 1000 on demand)")
	return c
}

const sessionURLHelp = `LIVE (the default) follows the newest fragments; LIVE_REPLAY starts at --start and plays on into
live; ON_DEMAND plays [--start, --end] (at most 24 hours). Times are RFC 3339 (UTC when no zone is
given), Unix seconds or relative to now (-10m). The URL stays valid for --expires seconds (300 to
43200, default 300).`

func addSessionURLFlags(c *cobra.Command, o *hlsURLOptions, maxHelp string) {
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.PlaybackMode, "playback-mode", "LIVE", "LIVE, LIVE_REPLAY or ON_DEMAND")
	o.Range.addFlags(f, "first fragment start time (LIVE_REPLAY, ON_DEMAND)", "last fragment start time (ON_DEMAND; optional for LIVE_REPLAY)")
	f.IntVar(&o.Expires, "expires", 0, "seconds the URL stays valid, 300 to 43200 (default 300)")
	f.IntVar(&o.MaxFragments, "max-fragments", 0, maxHelp)
}

// sessionRequest is what hls-url and dash-url send, resolved from their options.
type sessionRequest struct {
	am         *kinesisvideoarchivedmedia.Client
	kind       string // the fragment selector type
	start, end *time.Time
	expires    *int32
	max        *int64
}

// request resolves o and opens the archived-media client for api.
func (o hlsURLOptions) request(ctx context.Context, env *Env, verb string, api types.APIName) (sessionRequest, error) {
	from, to, tt, _ := o.Range.resolve(time.Now()) // checked by validate
	am, err := newArchivedClient(ctx, env, o.Stream, api, verb)
	if err != nil {
		return sessionRequest{}, err
	}
	r := sessionRequest{am: am, kind: string(tt)}
	if !from.IsZero() {
		r.start = aws.Time(from)
	}
	if !to.IsZero() {
		r.end = aws.Time(to)
	}
	if o.Expires != 0 {
		r.expires = aws.Int32(int32(o.Expires))
	}
	if o.MaxFragments != 0 {
		r.max = aws.Int64(int64(o.MaxFragments))
	}
	return r, nil
}

// printURL prints the session URL a request answered, or its error.
func (o hlsURLOptions) printURL(env *Env, verb string, url *string, err error) error {
	if err != nil {
		return wrapAPI(err, "%s %s", verb, o.Stream)
	}
	_, err = fmt.Fprintln(env.Stdout, aws.ToString(url))
	return err
}

func runHLSURL(ctx context.Context, env *Env, o hlsURLOptions) error {
	r, err := o.request(ctx, env, "hls-url", types.APINameGetHlsStreamingSessionUrl)
	if err != nil {
		return err
	}
	sel := &amtypes.HLSFragmentSelector{FragmentSelectorType: amtypes.HLSFragmentSelectorType(r.kind)}
	if r.start != nil {
		sel.TimestampRange = &amtypes.HLSTimestampRange{StartTimestamp: r.start, EndTimestamp: r.end}
	}
	out, err := r.am.GetHLSStreamingSessionURL(ctx, &kinesisvideoarchivedmedia.GetHLSStreamingSessionURLInput{
		StreamName: o.Stream.name(), StreamARN: o.Stream.arn(), PlaybackMode: amtypes.HLSPlaybackMode(o.mode()),
		HLSFragmentSelector: sel, Expires: r.expires, MaxMediaPlaylistFragmentResults: r.max,
		ContainerFormat: amtypes.ContainerFormat(strings.ToUpper(o.ContainerFormat))})
	if err != nil {
		return o.printURL(env, "hls-url", nil, err)
	}
	return o.printURL(env, "hls-url", out.HLSStreamingSessionURL, nil)
}

func runDASHURL(ctx context.Context, env *Env, o hlsURLOptions) error {
	r, err := o.request(ctx, env, "dash-url", types.APINameGetDashStreamingSessionUrl)
	if err != nil {
		return err
	}
	sel := &amtypes.DASHFragmentSelector{FragmentSelectorType: amtypes.DASHFragmentSelectorType(r.kind)}
	if r.start != nil {
		sel.TimestampRange = &amtypes.DASHTimestampRange{StartTimestamp: r.start, EndTimestamp: r.end}
	}
	out, err := r.am.GetDASHStreamingSessionURL(ctx, &kinesisvideoarchivedmedia.GetDASHStreamingSessionURLInput{
		StreamName: o.Stream.name(), StreamARN: o.Stream.arn(), PlaybackMode: amtypes.DASHPlaybackMode(o.mode()),
		DASHFragmentSelector: sel, Expires: r.expires, MaxManifestFragmentResults: r.max})
	if err != nil {
		return o.printURL(env, "dash-url", nil, err)
	}
	return o.printURL(env, "dash-url", out.DASHStreamingSessionURL, nil)
}
