package cmd

// One upload: the source, the fragmenter, the spool and the producer. put-media runs one; the
// agent runs one per camera.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

// uploadWatch lets the agent look at an upload while it runs. Safe for concurrent use.
type uploadWatch struct {
	mu       sync.Mutex
	producer *client.Producer
	link     capture.CameraLink
}

func (w *uploadWatch) set(p *client.Producer, link capture.CameraLink) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.producer, w.link = p, link
}

// get returns the producer (nil before it exists) and the camera link (nil for other sources).
func (w *uploadWatch) get() (*client.Producer, capture.CameraLink) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.producer, w.link
}

// putMediaSummary is what put-media reports at the end.
type putMediaSummary struct {
	Fragments int
	Bytes     int64
	Media     time.Duration // sum of fragment durations (fragmentDuration): ListFragments' lengths
	Elapsed   time.Duration
	Final     string // PERSISTED or RECEIVED
	// Interrupted: Ctrl-C ended the upload, maybe before every fragment sent was acknowledged.
	Interrupted bool
}

// upload runs one upload to its end (the source's end, --duration, or ctx), prints the summary
// (or the ACKs) to env.Stdout, and returns the producer's stats.
func upload(ctx context.Context, env *Env, o putMediaOptions, watch *uploadWatch) (client.ProducerStats, error) {
	stream := o.Stream.String()
	log := env.Log.With("stream", stream)
	live := o.live()
	_, err := o.rtspTLS() // --rtsp-ca-file's mistakes before anything starts
	if err != nil {
		return client.ProducerStats{}, err
	}

	// Open the source; a file is wrapped to count bytes for the progress bar.
	c, _ := annexBCodec(o.Codec) // checked by validate
	opts := capture.Options{FrameRate: o.FrameRate, Codec: c, Notice: func(msg string) { log.Warn(msg) }}
	var counter *countingFile
	var size int64 = -1
	openMedia := func(ctx context.Context) (capture.Source, error) {
		switch {
		case live:
			return o.openCamera(ctx, log, nil)
		case o.Source == "-":
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
	// A file with more tracks than KVS takes is refused here, before --create and before every
	// fragment comes back as ERROR 4012.
	open := func(ctx context.Context) (capture.Source, error) {
		src, err := openMedia(ctx)
		if err != nil || live {
			return src, err
		}
		if n := len(src.Tracks()); n > maxTracks {
			src.Close()
			return nil, fmt.Errorf("%s: %d tracks; a KVS stream takes at most %d: keep the ones to upload, e.g. ffmpeg -i IN -map 0:v:0 -map 0:a:0 -c copy -f matroska - | kvs put-media --source - ...",
				o.Source, n, maxTracks)
		}
		return src, nil
	}
	// A file or standard input that cannot be opened as media is a bad --source (capture's errors
	// name it); a camera that cannot be opened is not.
	openErr := func(err error) error {
		var pe *fs.PathError
		switch {
		case errors.Is(err, capture.ErrEmptyInput):
			hint := "Is it the right file?"
			if o.Source == "-" {
				hint = "Nothing came on standard input: did the program writing to the pipe fail? Its error is above."
			}
			return withHint(usageErrorf("--source %s: the input is empty", o.Source), hint)
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
		if src, err = open(ctx); err != nil {
			return client.ProducerStats{}, openErr(err)
		}
	}
	closeSrc := func() {
		if src != nil {
			src.Close()
		}
	}
	var spool *client.Spool
	if o.SpoolDir != "" {
		spool, err = client.OpenSpool(client.SpoolConfig{Dir: o.SpoolDir, Stream: stream, MaxBytes: int64(o.SpoolMaxBytes),
			Notice: func(msg string) { log.Warn(msg) }})
		if err != nil {
			closeSrc()
			return client.ProducerStats{}, fmt.Errorf("put-media %s: --spool-dir: %w", stream, err)
		}
		defer spool.Close()
		if st := spool.Stats(); st.Recovered > 0 {
			log.Info("spool: sending first what an earlier run left", "spool", o.SpoolDir, "fragments", st.Recovered, "bytes", st.Bytes,
				"from", st.RecoveredFrom.UTC().Format(time.RFC3339Nano), "to", st.RecoveredTo.UTC().Format(time.RFC3339Nano))
		}
	}
	cl, err := newClient(ctx, env)
	if err != nil {
		closeSrc()
		return client.ProducerStats{}, err
	}
	// A file waits for the spool to have room; a live source or a pipe (maybe a camera's) does
	// not, and the spool drops its oldest fragments instead.
	pcfg := client.ProducerConfig{Stream: stream, MaxInFlight: o.MaxInFlight, Spool: spool, SpoolRate: int64(o.SpoolRate),
		SpoolWait: !live && o.Source != "-"}
	retention, err := ensureStream(ctx, env, cl, o)
	switch {
	case err == nil:
		pcfg.RetentionHours = &retention
	case spool != nil && endpointAway(err):
		// With a spool the endpoint may be away: capture goes into the spool, and the producer
		// checks (or creates) the stream once the endpoint answers.
		log.Warn("endpoint unreachable: capturing into the spool; the stream is checked when the endpoint answers", "spool", o.SpoolDir, "error", err)
		if o.Create {
			pcfg.CreateRetentionHours = &o.RetentionHours
		}
	default:
		closeSrc()
		return client.ProducerStats{}, err
	}
	if src == nil {
		if src, err = open(ctx); err != nil {
			return client.ProducerStats{}, openErr(err)
		}
	}
	start := time.Now()
	if lc, ok := src.(capture.LiveClock); ok {
		start = lc.Start() // the time of the first frame
	}
	fr, err := capture.NewFragmenter(src, capture.FragmenterConfig{
		ReuseFrameData: true, // each fragment is done with (Send does not retain it) before the next
		TargetDuration: o.FragmentDuration,
		MaxDuration:    kvsMaxFragmentDuration, // a longer fragment would come back as ERROR 4002
		Realtime:       o.Realtime,
		Loop:           o.Loop,
		Reopen:         open,
		Base:           time.Duration(start.UnixNano()),
		Rebase:         !live, // a file's own origin (GetMedia's raw output: absolute timecodes) is not now
		OnForcedCut: func(tc time.Duration) {
			log.Warn("GOP longer than the maximum fragment duration: fragment cut at a non-keyframe", "timecode", tc)
		},
		Notice: func(msg string) { log.Info(msg) },
	})
	if err != nil {
		src.Close()
		return client.ProducerStats{}, usageError{err}
	}
	defer fr.Close()

	var outMu sync.Mutex
	jsonOut := o.Output == outputJSON
	enc := json.NewEncoder(env.Stdout)
	var ackErr error // first error writing ACK lines
	pcfg.OnAck = func(a client.Ack) {
		switch ae := (&client.AckErr{Ack: a}); {
		case a.EventType == client.AckError && ae.Retryable():
			log.Warn("ERROR ack; the fragment is sent again", "error", ae.Error())
		case a.EventType == client.AckError && ae.Fatal():
			// It ends the upload and is the command's error: said once, there.
			log.Debug("ERROR ack; the upload ends", "error", ae.Error())
		case a.EventType == client.AckError:
			log.Error("ERROR ack", "error", ae.Error())
		default:
			log.Debug("ack", "event", a.EventType, "fragment", a.FragmentNumber, "timecode", a.FragmentTimecode)
		}
		if jsonOut {
			outMu.Lock()
			if err := enc.Encode(a); err != nil && ackErr == nil {
				ackErr = err
			}
			outMu.Unlock()
		}
	}
	prod, err := client.NewProducer(cl, pcfg)
	if err != nil {
		return client.ProducerStats{}, err
	}
	link, _ := src.(capture.CameraLink)
	watch.set(prod, link)

	var bar *progress
	if counter != nil && !o.Loop && size > 0 {
		bar = newProgress(env.Stderr, size, true, "put-media "+stream)
	} else {
		bar = newProgress(env.Stderr, -1, false, "put-media "+stream)
	}
	sum := putMediaSummary{Final: client.AckPersisted}
	if pcfg.RetentionHours != nil && *pcfg.RetentionHours == 0 || pcfg.CreateRetentionHours != nil && *pcfg.CreateRetentionHours == 0 {
		sum.Final = client.AckReceived
	}
	grace := interruptGrace
	if spool != nil {
		grace = spoolGrace
	}
	var readErr, sendErr error
	interrupted := false
	// A live source ends at a frame boundary when ctx is cancelled (Ctrl-C): the fragment in
	// progress is still finished and sent, within the grace.
	loopCtx := ctx
	if live {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		defer context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })()
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
				readErr = fmt.Errorf("put-media %s: reading %s: %w", stream, sourceName(o.Source), err)
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
		sum.Media += fragmentDuration(f)
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
	// Close waits for the acks of what was sent: at most the grace once reading stopped on
	// Ctrl-C or an error, and also when Ctrl-C comes during the wait (an endpoint that never
	// answers would otherwise hold put-media forever).
	closeCtx, cancelClose := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelClose()
	if interrupted || readErr != nil {
		defer time.AfterFunc(grace, cancelClose).Stop()
	} else {
		defer context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancelClose) })()
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
	// Ctrl-C is how a live source ends, so it gets the summary too, with what it left unacknowledged.
	sum.Interrupted = interrupted
	if !jsonOut {
		if err := writePutMediaSummary(env.Stdout, stream, sum, st); err != nil {
			return st, err
		}
	}
	switch {
	case readErr != nil:
		if errors.Is(closeErr, context.Canceled) && !interrupted {
			// The grace ended the wait, not Ctrl-C: say so, rather than pass on a cancellation
			// that exits as if interrupted, without a word.
			closeErr = fmt.Errorf("put-media %s: %d of %d fragments sent were not acknowledged within %v after reading stopped",
				stream, st.Fragments-st.Stored, st.Fragments, grace)
		}
		return st, errors.Join(readErr, closeErr)
	case closeErr != nil && interrupted && spool != nil:
		log.Info("interrupted: what was not acknowledged stays in the spool for the next run", "spool", o.SpoolDir,
			"spooled", st.Spool.Fragments, "stored", st.Stored)
		return st, ctx.Err()
	case closeErr != nil:
		return st, uploadEnd(closeErr, o, pcfg.RetentionHours != nil)
	case sendErr != nil:
		return st, fmt.Errorf("put-media %s: %w", stream, sendErr)
	case interrupted:
		log.Info("interrupted", "fragments", st.Fragments, "stored", st.Stored)
		return st, ctx.Err()
	case ackErr != nil:
		return st, fmt.Errorf("put-media %s: writing ACKs: %w", stream, ackErr)
	}
	return st, nil
}

// maxTracks is how many tracks a KVS fragment may have (PutMedia's 4012,
// MORE_THAN_ALLOWED_TRACKS_FOUND).
const maxTracks = 3

// endpointAway reports whether err says that the endpoint is not there now (nothing listening, no
// answer, no name resolution), as opposed to a wrong one (TLS, not a KVS endpoint) or an answer.
func endpointAway(err error) bool {
	f, ok := diagnose(err)
	return ok && (f.kind == failRefused || f.kind == failTimeout || f.kind == failUnknownHost || f.kind == failNoAnswer)
}

// sourceName is --source as it may be shown: an RTSP URL without its password.
func sourceName(source string) string {
	if capture.IsRTSPSpec(source) {
		return capture.RedactRTSP(source)
	}
	return source
}

// fragmentDuration is the span of a fragment's frames as the server measures it for
// FragmentLengthInMilliseconds: to the end of its first video track's frames when it has one
// (mkv.Fragment.DurationTo). The audio frame that ends after the next fragment's keyframe is
// then not counted in both fragments, and the summary's sum is the stream's span.
func fragmentDuration(f *mkv.Fragment) time.Duration {
	scale := f.TimecodeScale
	if scale == 0 {
		scale = mkv.DefaultTimecodeScale
	}
	ticks := f.Duration()
	for _, t := range f.Tracks {
		if t.Type == mkv.TrackTypeVideo {
			ticks = f.DurationTo(t.Number)
			break
		}
	}
	return time.Duration(ticks) * time.Duration(scale) //nolint:gosec // ticks × ns per tick
}

func writePutMediaSummary(w io.Writer, stream string, s putMediaSummary, st client.ProducerStats) error {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Bytes) / 1e6 / s.Elapsed.Seconds()
	}
	spool := ""
	if st.Recovered > 0 {
		spool += fmt.Sprintf("; %d from the spool of an earlier run", st.Recovered)
	}
	if st.Spool.Dropped > 0 {
		spool += fmt.Sprintf("; %d dropped (spool full)", st.Spool.Dropped)
	}
	if st.Spool.Fragments > 0 {
		spool += fmt.Sprintf("; %d kept in the spool", st.Spool.Fragments)
	}
	if open := s.Fragments - st.Stored - st.Failed; s.Interrupted && open > 0 && st.Recovered == 0 && st.Spool.Fragments == 0 {
		spool += fmt.Sprintf("; %d not acknowledged when interrupted", open)
	}
	fragments := "fragments"
	if s.Fragments == 1 {
		fragments = "fragment"
	}
	_, err := fmt.Fprintf(w, "put-media %s: %d %s, %d bytes, %.3f s of media in %.3f s (%.2f MB/s); %d %s, %d failed%s\n",
		stream, s.Fragments, fragments, s.Bytes, s.Media.Seconds(), s.Elapsed.Seconds(), rate, st.Stored, s.Final, st.Failed, spool)
	return err
}

// ensureStream returns the stream's retention in hours, creating the stream first with --create.
func ensureStream(ctx context.Context, env *Env, cl *client.Client, o putMediaOptions) (int, error) {
	retention := func(name, arn *string) (int, error) {
		out, err := cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: name, StreamARN: arn})
		if err != nil {
			return 0, err
		}
		return int(aws.ToInt32(out.StreamInfo.DataRetentionInHours)), nil
	}
	hours, err := retention(o.Stream.name(), o.Stream.arn())
	if err == nil || !o.Create || !isNotFound(err) {
		return hours, wrapAPI(err, "put-media %s", o.Stream)
	}
	created, err := cl.CreateStreamIfMissing(ctx, o.Stream.Name, o.RetentionHours)
	switch {
	case err != nil:
		return 0, wrapAPI(err, "put-media %s: create stream", o.Stream)
	case !created: // made meanwhile by another producer started with --create too: used as it is
		hours, err := retention(aws.String(o.Stream.Name), nil)
		return hours, wrapAPI(err, "put-media %s", o.Stream)
	}
	env.Log.Info("created stream", "stream", o.Stream.Name, "retention-hours", o.RetentionHours)
	return o.RetentionHours, nil
}
