package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

// Output media formats of get-media and get-fragments.
const (
	formatMKV = "mkv"
	formatRaw = "raw"
)

type getMediaOptions struct {
	Stream            streamRef
	StartSelector     string
	FragmentNumber    string
	StartTimestamp    string
	ContinuationToken string
	Format            string
	OutFile           string
	NoFollow          bool
	IdleTimeout       time.Duration
	MaxFragments      int
}

func (o getMediaOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if _, err := o.selector(time.Now()); err != nil {
		return err
	}
	if o.Format != formatMKV && o.Format != formatRaw {
		return fmt.Errorf("--format %q: want mkv or raw", o.Format)
	}
	if o.MaxFragments < 0 {
		return fmt.Errorf("--max-fragments %d: want a positive number", o.MaxFragments)
	}
	if o.IdleTimeout < 0 {
		return fmt.Errorf("--idle-timeout %v: want a positive duration", o.IdleTimeout)
	}
	return nil
}

// selector builds the start selector from the flags, checking that exactly the flag the type
// needs is given.
func (o getMediaOptions) selector(now time.Time) (client.StartSelector, error) {
	sel := client.StartSelector{Type: strings.ToUpper(o.StartSelector)}
	given := map[string]bool{"--fragment-number": o.FragmentNumber != "", "--start-timestamp": o.StartTimestamp != "",
		"--continuation-token": o.ContinuationToken != ""}
	want := ""
	switch sel.Type {
	case client.StartNow, client.StartEarliest:
	case client.StartFragmentNumber:
		want, sel.AfterFragmentNumber = "--fragment-number", o.FragmentNumber
	case client.StartServerTimestamp, client.StartProducerTimestamp:
		want = "--start-timestamp"
		if o.StartTimestamp != "" {
			t, err := parseTime(o.StartTimestamp, now)
			if err != nil {
				return sel, fmt.Errorf("--start-timestamp: %w", err)
			}
			sel.StartTimestamp = t
		}
	case client.StartContinuationToken:
		want, sel.ContinuationToken = "--continuation-token", o.ContinuationToken
	default:
		return sel, fmt.Errorf("--start-selector %q: want NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP or CONTINUATION_TOKEN", o.StartSelector)
	}
	for flag, ok := range given {
		if ok && flag != want {
			return sel, fmt.Errorf("%s does not go with --start-selector %s", flag, sel.Type)
		}
	}
	if want != "" && !given[want] {
		return sel, fmt.Errorf("--start-selector %s needs %s", sel.Type, want)
	}
	return sel, nil
}

func newGetMediaCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runGetMedia, &cobra.Command{
		Use:   "get-media --stream-name NAME [--start-selector NOW|EARLIEST|...] [--format mkv|raw] [-o FILE] [--no-follow]",
		Short: "Read a stream with GetMedia, live or from a point in it",
		Long: `Read a stream with GetMedia and write the media to stdout or -o FILE.

--format mkv (default) writes one continuous Matroska stream (one header, then a cluster per
fragment, timestamps starting at 0) that ffplay, ffmpeg, mkvmerge and VLC accept, from a pipe too:
  kvs get-media --stream-name cam | ffplay -
A change of picture size stays in it. A change of codec, of the track set or of the audio format
starts a new Matroska segment, which players do not follow (ffmpeg reads on with the old tracks):
get-media says on stderr at which fragment, to read from there with FRAGMENT_NUMBER.
--format raw writes the fragments as GetMedia serves them: one self-contained MKV document per
fragment with the KVS tags (fragment number, server and producer timestamps, continuation token).

Start selectors (--start-selector, default NOW):
  NOW                 fragments that complete after the request
  EARLIEST            the oldest stored fragment
  FRAGMENT_NUMBER     --fragment-number N: starting with fragment N (inclusive)
  SERVER_TIMESTAMP    --start-timestamp T: from the fragment containing T
  PRODUCER_TIMESTAMP  --start-timestamp T: the same on producer timestamps
  CONTINUATION_TOKEN  --continuation-token X: after the fragment a previous read ended with
Times are RFC 3339 (UTC when no zone is given), Unix seconds (1705489836.421) or relative to now
(-10m, -1h30m).

It follows the live stream until interrupted, or with --no-follow stops at the live edge (kvs ends
the response there; against AWS, which keeps it open, the read ends after --idle-timeout without
data). Broken connections are resumed from the continuation token. On exit the last continuation
token is printed to stderr, to resume with --start-selector CONTINUATION_TOKEN.`,
	})
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.StartSelector, "start-selector", client.StartNow, "NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP or CONTINUATION_TOKEN")
	f.StringVar(&o.FragmentNumber, "fragment-number", "", "fragment to start with (FRAGMENT_NUMBER)")
	f.StringVar(&o.StartTimestamp, "start-timestamp", "", "time to start at (SERVER_TIMESTAMP, PRODUCER_TIMESTAMP)")
	f.StringVar(&o.ContinuationToken, "continuation-token", "", "token printed by a previous get-media (CONTINUATION_TOKEN)")
	f.StringVar(&o.Format, "format", formatMKV, "mkv (one continuous Matroska stream) or raw (GetMedia chunks with KVS tags)")
	f.StringVarP(&o.OutFile, "output-file", "o", "", "write media to this file instead of stdout")
	f.BoolVar(&o.NoFollow, "no-follow", false, "stop at the live edge instead of waiting for new fragments")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", 0, "with --no-follow: end after this long without data (default 5s)")
	f.IntVar(&o.MaxFragments, "max-fragments", 0, "stop after this many fragments (default: no limit)")
	return c
}

// fragmentSink writes fragments in one of the output formats.
type fragmentSink struct {
	format string
	w      io.Writer
	sw     *mkv.StreamWriter
	buf    []byte

	// With --format mkv: told when a fragment starts a new Segment (its tracks changed), with the
	// tracks before and after.
	onNewSegment func(f *mkv.Fragment, before, after string)
	tracks       string // the current Segment's tracks, described
}

func newFragmentSink(w io.Writer, format string) *fragmentSink {
	s := &fragmentSink{format: format, w: w}
	if format == formatMKV {
		s.sw = mkv.NewStreamWriter(w)
	}
	return s
}

func (s *fragmentSink) write(f *mkv.Fragment) error {
	if s.sw != nil {
		segs := s.sw.Segments()
		if err := s.sw.WriteFragment(f); err != nil {
			return err
		}
		if s.sw.Segments() != segs {
			before := s.tracks
			s.tracks = describeTracks(f.Tracks)
			if segs > 0 && s.onNewSegment != nil {
				s.onNewSegment(f, before, s.tracks)
			}
		}
		return nil
	}
	var err error
	if s.buf, err = mkv.AppendFragment(s.buf[:0], f); err != nil {
		return err
	}
	_, err = s.w.Write(s.buf)
	return err
}

// warnTrackChanges makes s say on stderr where the tracks change in a way players do not follow
// within one Matroska stream, and how to read the stream from there.
func (s *fragmentSink) warnTrackChanges(env *Env, command string, stream streamRef) *fragmentSink {
	s.onNewSegment = func(f *mkv.Fragment, before, after string) {
		num, _ := f.Tag(mkv.TagFragmentNumber)
		fmt.Fprintf(env.Stderr, "kvs %s: the tracks change at fragment %s (%s, then %s): a new Matroska "+
			"segment starts there, which players do not follow (ffmpeg reads on with the earlier tracks "+
			"and drops or fails to decode the rest); to play from there, read it on its own: "+
			"kvs get-media %s --start-selector FRAGMENT_NUMBER --fragment-number %s\n",
			command, num, before, after, stream.flag(), num)
	}
	return s
}

// describeTracks says what tracks are, for messages: "V_MPEG4/ISO/AVC 640x480, A_AAC 48000 Hz".
func describeTracks(tracks []mkv.Track) string {
	var b strings.Builder
	for i, t := range tracks {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.CodecID)
		switch {
		case t.Width > 0:
			fmt.Fprintf(&b, " %dx%d", t.Width, t.Height)
		case t.SamplingRate > 0:
			fmt.Fprintf(&b, " %g Hz %dch", t.SamplingRate, t.Channels)
		}
	}
	if len(tracks) == 0 {
		return "no tracks"
	}
	return b.String()
}

func (s *fragmentSink) close() error {
	if s.sw != nil {
		return s.sw.Close()
	}
	return nil
}

func runGetMedia(ctx context.Context, env *Env, o getMediaOptions) error {
	sel, _ := o.selector(time.Now()) // checked by validate
	cl, err := newDownloadClient(ctx, env, o.OutFile)
	if err != nil {
		return err
	}
	stream := o.Stream.String()
	cons, err := client.NewConsumer(cl, client.ConsumerConfig{Stream: stream, Start: sel, NoFollow: o.NoFollow, IdleTimeout: o.IdleTimeout})
	if err != nil {
		return usageError{err}
	}
	defer cons.Close()
	n := 0
	// The token printed is the last written fragment's: the consumer's moves on when Next returns
	// a fragment, and one that could not be written (a full disk, a player that exited) would be
	// skipped by a read resumed from it.
	written := ""
	defer func() {
		if written != "" {
			fmt.Fprintf(env.Stderr, "continuation token: %s\n", written)
		}
		env.Log.Debug("get-media done", "stream", stream, "fragments", n)
	}()
	return writeOutput(env, o.OutFile, "get-media "+stream, func(w io.Writer) error {
		sink := newFragmentSink(w, o.Format).warnTrackChanges(env, "get-media", o.Stream)
		for o.MaxFragments == 0 || n < o.MaxFragments {
			f, err := cons.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return wrapAPI(err, "get-media %s", stream)
			}
			if err := sink.write(f); err != nil {
				return fmt.Errorf("get-media %s: writing: %w", stream, err)
			}
			written = cons.ContinuationToken()
			n++
		}
		if n == 0 {
			// As get-fragments says for an empty selection: an empty output is not a silent success.
			env.Log.Warn("no fragments: the stream has none from the start selector on", "stream", stream)
		}
		return sink.close()
	})
}
