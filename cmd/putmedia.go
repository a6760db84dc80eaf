package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

// interruptGrace bounds how long put-media waits, after Ctrl-C, for the fragments already sent
// to be acknowledged. It is a variable for tests.
var interruptGrace = 15 * time.Second

type putMediaOptions struct {
	Stream           streamRef
	Source           string
	FrameRate        float64
	FragmentDuration time.Duration
	Realtime         bool
	Loop             bool
	Create           bool
	RetentionHours   int
	MaxInFlight      int
	Output           string // "text" (summary) or "json" (every ACK)

	// Live sources only (--source testsrc, camera or camera:DEVICE); zero means the capture default.
	Width, Height int
	FPS           float64
	Bitrate       int
	Duration      time.Duration
}

// liveOptions returns the capture options of a live source. Keyframes are forced every
// --fragment-duration, so that fragments last about that long.
func (o putMediaOptions) liveOptions() capture.LiveOptions {
	return capture.LiveOptions{Width: o.Width, Height: o.Height, FPS: o.FPS, Bitrate: o.Bitrate,
		Duration: o.Duration, KeyframeInterval: o.FragmentDuration}
}

func (o putMediaOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if o.Source == "" {
		return errors.New("--source is required (a file, - for standard input, testsrc or camera)")
	}
	if o.Source == capture.SpecCameraPrefix {
		return errors.New("--source camera: names no device: give camera:/dev/videoN, or camera for the first camera")
	}
	if capture.IsLiveSpec(o.Source) {
		if o.Loop {
			return errors.New("--loop needs a file: a live source cannot be restarted")
		}
		if err := o.liveOptions().Validate(); err != nil {
			return err
		}
	} else if o.Width != 0 || o.Height != 0 || o.FPS != 0 || o.Bitrate != 0 || o.Duration != 0 {
		return errors.New("--width, --height, --fps, --bitrate and --duration apply to live sources (--source testsrc, camera or camera:/dev/videoN)")
	}
	if o.FrameRate < 0 {
		return fmt.Errorf("--frame-rate %g: want a positive number", o.FrameRate)
	}
	if o.FragmentDuration <= 0 || o.FragmentDuration > capture.MaxFragmentDuration {
		return fmt.Errorf("--fragment-duration %v: want more than 0 and at most %v", o.FragmentDuration, capture.MaxFragmentDuration)
	}
	if o.RetentionHours < 0 || o.RetentionHours > 87600 {
		return fmt.Errorf("--data-retention-in-hours %d: want 0 to 87600", o.RetentionHours)
	}
	if o.Create && o.Stream.Name == "" {
		return errors.New("--create needs --stream-name")
	}
	if o.Loop && o.Source == "-" {
		return errors.New("--loop needs a file: standard input cannot be read twice")
	}
	if o.MaxInFlight < 0 {
		return fmt.Errorf("--max-in-flight %d: want a positive number", o.MaxInFlight)
	}
	return validateOutput(o.Output, "text", outputJSON)
}

func newPutMediaCmd(env *Env) *cobra.Command {
	var o putMediaOptions
	c := newCommand(env, &o, runPutMedia, &cobra.Command{
		Use:   "put-media --stream-name NAME --source FILE|-|testsrc|camera[:DEVICE] [--fragment-duration 2s] [--realtime] [--loop] [--create]",
		Short: "Upload a media file or stream with PutMedia",
		Long: `Upload media to a stream with PutMedia: Matroska/WebM, MP4 (with audio) or raw H.264/H.265
Annex B, from a file or from standard input (-; MP4 needs a file). Frames are cut into fragments
that start at a keyframe, about --fragment-duration long, with absolute timecodes (the producer
timestamp of the first frame is the time put-media started).

Live sources, in builds with capture (cgo; see kvs list-devices): --source testsrc is a moving test
pattern, --source camera the first camera, --source camera:/dev/videoN that camera; the pictures
are encoded to H.264 (--width, --height, --fps, --bitrate) with a keyframe forced every
--fragment-duration, and stamped with the capture clock. They run until --duration or Ctrl-C; on
Ctrl-C the fragment in progress is finished and sent too.

The upload survives broken connections: it reconnects with backoff and resends every fragment not
yet acknowledged as persisted. Delivery is therefore at least once: a fragment whose
acknowledgement was lost may be stored twice, with the same producer timestamp.

--create is a convenience that AWS's PutMedia does not have: it creates the stream first (with
--data-retention-in-hours) when it does not exist.

Output: a summary on stdout, or with --output json every ACK event as one JSON line, as the server
sent it. A progress bar goes to stderr when it is a terminal.

Exit status 0 only when every fragment was PERSISTED (RECEIVED on a stream with no retention,
which never persists). ERROR acks are reported with their code and meaning. Ctrl-C stops reading
the source, waits up to 15 s for the fragments already sent, and exits 130.`,
	})
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.Source, "source", "", "media file, - for standard input, or a live source: testsrc, camera, camera:/dev/videoN (required)")
	f.Float64Var(&o.FrameRate, "frame-rate", 0, "frame rate of Annex B input whose SPS has no timing info")
	f.DurationVar(&o.FragmentDuration, "fragment-duration", capture.DefaultTargetDuration, "target fragment duration (fragments start at keyframes)")
	f.BoolVar(&o.Realtime, "realtime", false, "send frames at their real-time pace, like a live camera")
	f.BoolVar(&o.Loop, "loop", false, "start the file again at its end, with timestamps continuing (until Ctrl-C)")
	f.BoolVar(&o.Create, "create", false, "create the stream if it does not exist (kvs convenience, not a KVS API feature)")
	f.IntVar(&o.RetentionHours, "data-retention-in-hours", 24, "retention of a stream made by --create (0 to 87600)")
	f.IntVar(&o.MaxInFlight, "max-in-flight", client.DefaultMaxInFlight, "fragments sent but not yet acknowledged before reading the source pauses")
	f.StringVar(&o.Output, "output", "text", "text (a summary) or json (every ACK as a JSON line)")
	f.IntVar(&o.Width, "width", 0, "live sources: picture width in pixels (default 640)")
	f.IntVar(&o.Height, "height", 0, "live sources: picture height in pixels (default 480)")
	f.Float64Var(&o.FPS, "fps", 0, "live sources: frames per second (default 30)")
	f.IntVar(&o.Bitrate, "bitrate", 0, "live sources: H.264 bit rate in bits per second (default 1000000)")
	f.DurationVar(&o.Duration, "duration", 0, "live sources: stop after this long (default: until Ctrl-C)")
	return c
}

// putMediaSummary is what put-media reports at the end.
type putMediaSummary struct {
	Fragments int
	Bytes     int64
	Media     time.Duration // sum of fragment durations
	Elapsed   time.Duration
	Final     string // PERSISTED or RECEIVED
}

// sourceHint says what --source takes.
const sourceHint = "--source takes a media file (Matroska/WebM, MP4, Annex B H.264/H.265), - for standard input, testsrc, camera or camera:/dev/videoN."

// checkSource reports, before the server is asked anything, a --source that cannot work: a file
// that does not exist, is a directory or is empty, standard input that is a terminal, a camera
// device that does not exist, or capture that is not built in.
func checkSource(env *Env, source string) error {
	switch {
	case capture.IsLiveSpec(source):
		if ok, _ := capture.CaptureBuilt(); !ok {
			return fmt.Errorf("put-media --source %s: %w", source, capture.ErrCaptureNotBuilt)
		}
		device, ok := strings.CutPrefix(source, capture.SpecCameraPrefix)
		if !ok {
			return nil
		}
		if _, err := os.Stat(device); err != nil {
			return withHint(usageErrorf("--source %s: %v", source, pathErr(err)),
				"`kvs list-devices` lists the cameras; --source camera takes the first one.")
		}
		return nil
	case source == "-":
		if isTerminal(env.Stdin) {
			return withHint(usageErrorf("--source -: standard input is a terminal"),
				"Pipe the media in, e.g. ffmpeg -i in.mp4 -c copy -f matroska - | kvs put-media --source - ...")
		}
		return nil
	}
	fi, err := os.Stat(source)
	switch {
	case err != nil:
		return withHint(usageErrorf("--source %s: %v", source, pathErr(err)), sourceHint)
	case fi.IsDir():
		return withHint(usageErrorf("--source %s is a directory", source), sourceHint)
	case fi.Mode().IsRegular() && fi.Size() == 0:
		return usageErrorf("--source %s is empty", source)
	}
	return nil
}

func runPutMedia(ctx context.Context, env *Env, o putMediaOptions) error {
	// Local inputs first: a source that cannot be read is reported before the server is asked
	// anything (and before --create makes a stream for it).
	if err := checkSource(env, o.Source); err != nil {
		return err
	}
	stream := o.Stream.String()
	log := env.Log.With("stream", stream)

	// Open the source; a file is wrapped to count bytes for the progress bar.
	opts := capture.Options{FrameRate: o.FrameRate, Notice: func(msg string) { log.Warn(msg) }}
	var counter *countingFile
	var size int64 = -1
	live := capture.IsLiveSpec(o.Source)
	open := func(ctx context.Context) (capture.Source, error) {
		if live {
			lo := o.liveOptions()
			lo.Notice = func(msg string) { log.Warn(msg) }
			return capture.OpenLive(ctx, o.Source, lo) // ends with io.EOF when ctx is cancelled
		}
		if o.Source == "-" {
			return capture.Open(ctx, env.Stdin, "-", opts)
		}
		f, err := os.Open(o.Source)
		if err != nil {
			return nil, err
		}
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		counter = &countingFile{f: f}
		src, err := capture.Open(ctx, counter, o.Source, opts)
		if err != nil {
			f.Close()
			return nil, err
		}
		return src, nil
	}
	// A file or standard input that cannot be opened as media is a bad --source (capture's errors
	// name it); a camera that cannot be opened is not.
	openErr := func(err error) error {
		var pe *fs.PathError
		switch {
		case errors.Is(err, capture.ErrUnknownFormat):
			// capture's text suggests a --format flag, which put-media does not have.
			return withHint(usageErrorf("--source %s: not Matroska/WebM (EBML), MP4 (ftyp) or Annex B H.264/H.265 (start code)", o.Source),
				"Convert it first, e.g. ffmpeg -i IN -c:v libx264 -c:a aac -f matroska out.mkv.")
		case errors.As(err, &pe) && pe.Path == o.Source:
			return withHint(usageErrorf("--source %s: %v", o.Source, pe.Err), sourceHint)
		case !live:
			return usageErrorf("--source: %v", err)
		}
		return fmt.Errorf("put-media %s: %w", stream, err)
	}
	// A file is opened, and its format read, before the server is asked anything. Standard input
	// and live sources are opened after: a pipe may take its time to start, and a camera should
	// not capture for a stream that cannot be reached.
	var src capture.Source
	if !live && o.Source != "-" {
		var err error
		if src, err = open(ctx); err != nil {
			return openErr(err)
		}
	}
	closeSrc := func() {
		if src != nil {
			src.Close()
		}
	}
	cl, err := newClient(ctx, env)
	if err != nil {
		closeSrc()
		return err
	}
	retention, err := ensureStream(ctx, env, cl, o)
	if err != nil {
		closeSrc()
		return err
	}
	if src == nil {
		if src, err = open(ctx); err != nil {
			return openErr(err)
		}
	}
	start := time.Now()
	if lc, ok := src.(capture.LiveClock); ok {
		start = lc.Start() // the capture time of the first frame
	}
	fr, err := capture.NewFragmenter(src, capture.FragmenterConfig{
		ReuseFrameData: true, // each fragment is done with (Send does not retain it) before the next
		TargetDuration: o.FragmentDuration,
		Realtime:       o.Realtime,
		Loop:           o.Loop,
		Reopen:         open,
		Base:           time.Duration(start.UnixMilli()) * time.Millisecond,
		OnForcedCut: func(tc time.Duration) {
			log.Warn("GOP longer than the maximum fragment duration: fragment cut at a non-keyframe", "timecode", tc)
		},
		Notice: func(msg string) { log.Info(msg) },
	})
	if err != nil {
		src.Close()
		return usageError{err}
	}
	defer fr.Close()

	var outMu sync.Mutex
	jsonOut := o.Output == outputJSON
	enc := json.NewEncoder(env.Stdout)
	var ackErr error // first error writing ACK lines
	prod, err := client.NewProducer(cl, client.ProducerConfig{
		Stream:         stream,
		MaxInFlight:    o.MaxInFlight,
		RetentionHours: &retention,
		OnAck: func(a client.Ack) {
			if a.EventType == client.AckError {
				log.Error("ERROR ack", "error", (&client.AckErr{Ack: a}).Error())
			} else {
				log.Debug("ack", "event", a.EventType, "fragment", a.FragmentNumber, "timecode", a.FragmentTimecode)
			}
			if jsonOut {
				outMu.Lock()
				if err := enc.Encode(a); err != nil && ackErr == nil {
					ackErr = err
				}
				outMu.Unlock()
			}
		},
	})
	if err != nil {
		return err
	}

	var bar *progress
	if counter != nil && !o.Loop && size > 0 {
		bar = newProgress(env.Stderr, size, true, "put-media "+stream)
	} else {
		bar = newProgress(env.Stderr, -1, false, "put-media "+stream)
	}
	sum := putMediaSummary{Final: client.AckPersisted}
	if retention == 0 {
		sum.Final = client.AckReceived
	}
	var readErr, sendErr error
	interrupted := false
	// A live source ends at a frame boundary when ctx is cancelled (Ctrl-C): the fragment in
	// progress is still finished and sent, within interruptGrace.
	loopCtx := ctx
	if live {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		defer context.AfterFunc(ctx, func() { time.AfterFunc(interruptGrace, cancel) })()
		loopCtx = lctx
	}
	for {
		f, err := fr.Next(loopCtx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				interrupted = true
			} else {
				readErr = fmt.Errorf("put-media %s: reading %s: %w", stream, o.Source, err)
			}
			break
		}
		if err := prod.Send(loopCtx, f); err != nil {
			if ctx.Err() != nil {
				interrupted = true
			} else {
				sendErr = err // when the producer stopped, Close says why, with the fragments lost
			}
			break
		}
		scale := f.TimecodeScale
		if scale == 0 {
			scale = mkv.DefaultTimecodeScale
		}
		sum.Media += time.Duration(f.Duration()) * time.Duration(scale) //nolint:gosec // ticks × ns per tick
		if counter != nil && !o.Loop {
			bar.set(counter.n.Load())
		} else {
			bar.add(1)
		}
		st := prod.Stats()
		bar.describe(fmt.Sprintf("put-media %s: %d sent, %d stored", stream, st.Fragments, st.Stored))
	}

	if live && ctx.Err() != nil {
		interrupted = true
	}
	// Close waits for the acks of what was sent: at most interruptGrace once reading stopped on
	// Ctrl-C or an error, and also when Ctrl-C comes during the wait (an endpoint that never
	// answers would otherwise hold put-media forever).
	closeCtx, cancelClose := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelClose()
	if interrupted || readErr != nil {
		defer time.AfterFunc(interruptGrace, cancelClose).Stop()
	} else {
		defer context.AfterFunc(ctx, func() { time.AfterFunc(interruptGrace, cancelClose) })()
	}
	closeErr := prod.Close(closeCtx)
	if ctx.Err() != nil {
		interrupted = true
	}
	bar.finish()
	st := prod.Stats()
	sum.Fragments, sum.Bytes, sum.Elapsed = st.Fragments, st.Bytes, time.Since(start)
	if st.Resent > 0 {
		log.Warn("fragments resent after broken connections (at-least-once delivery: duplicates possible)", "resent", st.Resent, "connections", st.Connections)
	}
	if !jsonOut && !interrupted {
		if err := writePutMediaSummary(env.Stdout, stream, sum, st); err != nil {
			return err
		}
	}
	switch {
	case readErr != nil:
		return errors.Join(readErr, closeErr)
	case closeErr != nil:
		return wrapAPI(closeErr, "put-media %s", stream)
	case sendErr != nil:
		return fmt.Errorf("put-media %s: %w", stream, sendErr)
	case interrupted:
		log.Info("interrupted", "fragments", st.Fragments, "stored", st.Stored)
		return ctx.Err()
	case ackErr != nil:
		return fmt.Errorf("put-media %s: writing ACKs: %w", stream, ackErr)
	}
	return nil
}

func writePutMediaSummary(w io.Writer, stream string, s putMediaSummary, st client.ProducerStats) error {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Bytes) / 1e6 / s.Elapsed.Seconds()
	}
	_, err := fmt.Fprintf(w, "put-media %s: %d fragments, %d bytes, %.3f s of media in %.3f s (%.2f MB/s); %d %s, %d failed\n",
		stream, s.Fragments, s.Bytes, s.Media.Seconds(), s.Elapsed.Seconds(), rate, st.Stored, s.Final, st.Failed)
	return err
}

// ensureStream returns the stream's retention in hours, creating the stream first with --create.
func ensureStream(ctx context.Context, env *Env, cl *client.Client, o putMediaOptions) (int, error) {
	out, err := cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: o.Stream.name(), StreamARN: o.Stream.arn()})
	if err == nil {
		return int(aws.ToInt32(out.StreamInfo.DataRetentionInHours)), nil
	}
	if !o.Create || !isNotFound(err) {
		return 0, wrapAPI(err, "put-media %s", o.Stream)
	}
	in := &kinesisvideo.CreateStreamInput{StreamName: aws.String(o.Stream.Name)}
	if o.RetentionHours > 0 {
		in.DataRetentionInHours = aws.Int32(int32(o.RetentionHours)) //nolint:gosec // range-checked in validate
	}
	if _, err := cl.Control.CreateStream(ctx, in); err != nil {
		return 0, wrapAPI(err, "put-media %s: create stream", o.Stream)
	}
	env.Log.Info("created stream", "stream", o.Stream.Name, "retention-hours", o.RetentionHours)
	return o.RetentionHours, nil
}
