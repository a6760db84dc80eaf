package cmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv/codec"
)

// interruptGrace bounds how long put-media waits, after Ctrl-C, for the fragments already sent
// to be acknowledged. It is a variable for tests. With a spool the wait is spoolGrace: what is not
// acknowledged stays in the spool for the next run.
var (
	interruptGrace = 15 * time.Second
	spoolGrace     = 2 * time.Second
)

// kvsMaxFragmentDuration is the longest fragment KVS (and kvs server) accepts: a fragment with a
// frame later than that after its first frame is refused with ERROR 4002
// MAX_FRAGMENT_DURATION_REACHED.
const kvsMaxFragmentDuration = 10 * time.Second

type putMediaOptions struct {
	Stream           streamRef
	Source           string
	FrameRate        float64
	Codec            string // Annex B input: h264 or h265 ("": from its first SPS)
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
	// Duration is wall-clock capture time, for every live source (testsrc, camera, rtsp).
	Duration time.Duration

	// RTSP cameras only.
	RTSPTransport string
	RTSPCAFile    string

	// The spool: fragments on disk until PERSISTED.
	SpoolDir      string
	SpoolMaxBytes byteSize
	SpoolRate     byteRate // bytes per second of backlog; 0: as fast as the link goes
}

// live reports whether the source is captured as it happens (a camera, the test pattern, an
// RTSP camera) rather than read from a file or standard input.
func (o putMediaOptions) live() bool {
	return capture.IsLiveSpec(o.Source) || capture.IsRTSPSpec(o.Source)
}

// liveOptions returns the capture options of a live source. Keyframes are forced every
// --fragment-duration, so that fragments last about that long.
func (o putMediaOptions) liveOptions() capture.LiveOptions {
	return capture.LiveOptions{Width: o.Width, Height: o.Height, FPS: o.FPS, Bitrate: o.Bitrate,
		Duration: o.Duration, KeyframeInterval: o.FragmentDuration}
}

// rtspOptions returns the options of an RTSP camera; the CA file is read by rtspTLS.
func (o putMediaOptions) rtspOptions() capture.RTSPOptions {
	return capture.RTSPOptions{Transport: o.RTSPTransport, Duration: o.Duration}
}

// openCamera opens a live source: an RTSP camera (rtsp:// or rtsps://, with o's RTSP options,
// TLS, and tune's changes when tune is not nil) or a capture device; notices go to log at warn
// level, RTSP's informational messages at info. A source opened this way ends with io.EOF when
// ctx is cancelled.
func (o putMediaOptions) openCamera(ctx context.Context, log *slog.Logger, tune func(*capture.RTSPOptions)) (capture.Source, error) {
	notice := func(msg string) { log.Warn(msg) }
	if capture.IsRTSPSpec(o.Source) {
		ro := o.rtspOptions()
		var err error
		if ro.TLSConfig, err = o.rtspTLS(); err != nil {
			return nil, err
		}
		ro.Notice, ro.Info = notice, func(msg string) { log.Info(msg) }
		if tune != nil {
			tune(&ro)
		}
		return capture.OpenRTSP(ctx, o.Source, ro)
	}
	lo := o.liveOptions()
	lo.Notice = notice
	return capture.OpenLive(ctx, o.Source, lo)
}

// rtspTLS returns the TLS configuration of an rtsps:// camera: the system's roots, or the
// certificates of --rtsp-ca-file (a camera's own certificate).
func (o putMediaOptions) rtspTLS() (*tls.Config, error) {
	if o.RTSPCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(o.RTSPCAFile)
	if err != nil {
		return nil, usageErrorf("--rtsp-ca-file: %v", pathErr(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageErrorf("--rtsp-ca-file %s: no PEM certificate in it", o.RTSPCAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (o putMediaOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if o.Source == "" {
		return errors.New("--source is required (a file, - for standard input, rtsp://camera/path, testsrc or camera)")
	}
	if o.Source == capture.SpecCameraPrefix {
		return errors.New("--source camera: names no device: give camera:/dev/videoN, or camera for the first camera")
	}
	rtsp := capture.IsRTSPSpec(o.Source)
	switch {
	case o.live() && o.Loop:
		return errors.New("--loop needs a file: a live source cannot be restarted")
	case capture.IsLiveSpec(o.Source):
		if err := o.liveOptions().Validate(); err != nil {
			return err
		}
	case rtsp:
		if o.Width != 0 || o.Height != 0 || o.FPS != 0 || o.Bitrate != 0 {
			return errors.New("--width, --height, --fps and --bitrate set the test pattern and local cameras: an RTSP camera sends what it is configured to")
		}
		if err := o.rtspOptions().Validate(); err != nil {
			return fmt.Errorf("--rtsp-transport %q: want tcp, udp or auto", o.RTSPTransport)
		}
	case o.Width != 0 || o.Height != 0 || o.FPS != 0 || o.Bitrate != 0 || o.Duration != 0:
		return errors.New("--width, --height, --fps, --bitrate and --duration apply to live sources (--source rtsp://..., testsrc, camera or camera:/dev/videoN)")
	}
	if !rtsp && (o.RTSPTransport != capture.RTSPTransportTCP && o.RTSPTransport != "" || o.RTSPCAFile != "") {
		return errors.New("--rtsp-transport and --rtsp-ca-file apply to --source rtsp:// and rtsps:// cameras")
	}
	if o.Duration < 0 {
		return fmt.Errorf("--duration %v: want a positive duration", o.Duration)
	}
	if o.FrameRate < 0 {
		return fmt.Errorf("--frame-rate %g: want a positive number", o.FrameRate)
	}
	if _, err := annexBCodec(o.Codec); err != nil {
		return err
	}
	if o.FragmentDuration <= 0 || o.FragmentDuration > kvsMaxFragmentDuration {
		return fmt.Errorf("--fragment-duration %v: want more than 0 and at most %v (the longest fragment KVS takes)", o.FragmentDuration, kvsMaxFragmentDuration)
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
	if o.SpoolDir == "" && (o.SpoolMaxBytes != 0 && o.SpoolMaxBytes != client.DefaultSpoolMaxBytes || o.SpoolRate != 0) {
		return errors.New("--spool-max-bytes and --spool-rate need --spool-dir")
	}
	if o.SpoolDir != "" && o.SpoolMaxBytes < client.MinSpoolMaxBytes {
		return fmt.Errorf("--spool-max-bytes %s: want at least %s", formatBytes(int64(o.SpoolMaxBytes)), formatBytes(client.MinSpoolMaxBytes))
	}
	return validateOutput(o.Output, "text", outputJSON)
}

func newPutMediaCmd(env *Env) *cobra.Command {
	c, _ := putMediaCommand(env)
	return c
}

// putMediaCommand builds put-media and the options its flags fill (with their defaults at once):
// the agent builds one per camera to read the camera's keys as flags.
func putMediaCommand(env *Env) (*cobra.Command, *putMediaOptions) {
	c, o := newCommand(env, runPutMedia, &cobra.Command{
		Use:   "put-media --stream-name NAME --source FILE|-|rtsp://CAMERA/PATH|testsrc|camera[:DEVICE] [--fragment-duration 2s] [--spool-dir DIR] [--create]",
		Short: "Upload a media file, a stream or a camera with PutMedia",
		Long: `Upload media to a stream with PutMedia: Matroska/WebM, MP4 (with audio) or raw H.264/H.265
Annex B, from a file or from standard input (-; MP4 needs a file), or a live camera. Frames are
cut into fragments that start at a keyframe, about --fragment-duration long, with absolute
timecodes (the producer timestamp of the first frame is the time put-media started, whatever
timestamps the file starts at, e.g. Matroska saved from GetMedia, or for a camera the time of its
first frame). Files concatenated on standard input follow each other where their timestamps
start again, and a new picture size (new parameter sets) starts new tracks.

IP cameras: --source rtsp://[user:password@]host[:port]/path (or rtsps://) plays the camera's
H.264 or H.265 video and its AAC audio (other audio is skipped, with a warning). RTP goes over the
RTSP connection (--rtsp-transport tcp, the default) or over UDP (udp; auto tries UDP first).
Frames keep the camera's timing: its RTCP sender reports' NTP clock when it sends them, else the
time they arrive (the log says which). A camera that drops is reconnected with backoff, and the
next fragment starts at its next keyframe. A camera that cannot be reached at start, refuses the
password (401) or has no such path (404) is an error at once. For rtsps:// with the camera's own
certificate, give it (PEM) with --rtsp-ca-file.

Local capture, in builds with it (cgo; see kvs list-devices): --source testsrc is a moving test
pattern, --source camera the first camera, --source camera:/dev/videoN that camera; the pictures
are encoded to H.264 (--width, --height, --fps, --bitrate) with a keyframe forced every
--fragment-duration, and stamped with the capture clock.

Live sources run until --duration (wall-clock time) or Ctrl-C; on Ctrl-C the fragment in
progress is finished and sent too.

The upload survives broken connections: it reconnects with backoff and resends every fragment not
yet acknowledged as persisted. Delivery is therefore at least once: a fragment whose
acknowledgement was lost may be stored twice, with the same producer timestamp.

--spool-dir DIR keeps every fragment on disk (synced) until it is PERSISTED, so that nothing is
lost while the endpoint is unreachable, for hours if need be, nor when put-media or the machine
stops: capture goes on into the spool, and when the endpoint answers the spool is sent oldest
first, in order, with the live edge after it. --spool-max-bytes bounds it (default 1GiB: 71
minutes of a 2 Mbit/s camera); when it is full the oldest fragments are dropped, with a warning
and a count. --spool-rate caps the rate at which the backlog is sent (e.g. 8Mbit; the live edge
is never held back), so that catching up does not take a shared uplink; the live edge then
trails by backlog / (rate - camera bit rate). Run put-media again with the same --spool-dir to
send what an earlier run left there. One process per spool directory.

--create is a convenience that AWS's PutMedia does not have: it creates the stream first (with
--data-retention-in-hours) when it does not exist.

Output: a summary on stdout, or with --output json every ACK event as one JSON line, as the server
sent it. A progress bar goes to stderr when it is a terminal.

Exit status 0 only when every fragment (those of the spool included) was PERSISTED (RECEIVED on a
stream with no retention, which never persists). ERROR acks are reported with their code and
meaning. Ctrl-C stops reading the source, waits up to 15 s for the fragments already sent (2 s
with a spool, which keeps the rest), and exits 130.`,
	})
	o.SpoolMaxBytes = client.DefaultSpoolMaxBytes // the flag's default
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringVar(&o.Source, "source", "", "media file, - for standard input, an RTSP camera (rtsp://[user:pass@]host[:port]/path), or testsrc, camera, camera:/dev/videoN (required)")
	f.Float64Var(&o.FrameRate, "frame-rate", 0, "frame rate of Annex B input (default: from its SPS timing info; needed when it has none)")
	f.StringVar(&o.Codec, "codec", "", "codec of Annex B input, h264 or h265 (default: from its first SPS; needed when none comes in its first 64 KiB, as from a pipe joined between keyframes)")
	f.DurationVar(&o.FragmentDuration, "fragment-duration", capture.DefaultTargetDuration, "target fragment duration (fragments start at keyframes)")
	f.BoolVar(&o.Realtime, "realtime", false, "send frames at their real-time pace, like a live camera")
	f.BoolVar(&o.Loop, "loop", false, "start the file again at its end, with timestamps continuing (until Ctrl-C)")
	f.BoolVar(&o.Create, "create", false, "create the stream if it does not exist (kvs convenience, not a KVS API feature)")
	f.IntVar(&o.RetentionHours, "data-retention-in-hours", 24, "retention of a stream made by --create (0 to 87600)")
	f.IntVar(&o.MaxInFlight, "max-in-flight", client.DefaultMaxInFlight, "fragments sent but not yet acknowledged before reading the source (or the spool) pauses")
	f.StringVar(&o.Output, "output", "text", "text (a summary) or json (every ACK as a JSON line)")
	f.IntVar(&o.Width, "width", 0, "test pattern and local cameras: picture width in pixels (default 640)")
	f.IntVar(&o.Height, "height", 0, "test pattern and local cameras: picture height in pixels (default 480)")
	f.Float64Var(&o.FPS, "fps", 0, "test pattern and local cameras: frames per second (default 30)")
	f.IntVar(&o.Bitrate, "bitrate", 0, "test pattern and local cameras: H.264 bit rate in bits per second (default 1000000)")
	f.DurationVar(&o.Duration, "duration", 0, "live sources: stop after this much wall-clock time (default: until Ctrl-C)")
	f.StringVar(&o.RTSPTransport, "rtsp-transport", capture.RTSPTransportTCP, "RTSP cameras: tcp (RTP in the RTSP connection), udp, or auto (UDP, else TCP)")
	f.StringVar(&o.RTSPCAFile, "rtsp-ca-file", "", "rtsps:// cameras: PEM certificates to trust (the camera's own), instead of the system's")
	f.StringVar(&o.SpoolDir, "spool-dir", "", "keep fragments in this directory until they are PERSISTED (survives outages, crashes and restarts)")
	f.Var(&o.SpoolMaxBytes, "spool-max-bytes", "with --spool-dir: its maximum size, e.g. 1GiB or 500MB; when it is full a live source's oldest fragments go, a file waits")
	f.Var(&o.SpoolRate, "spool-rate", "with --spool-dir: cap the rate of sending the backlog, per second, e.g. 8Mbit or 1MB (default: no cap)")
	return c, o
}

// sourceHint says what --source takes.
const sourceHint = "--source takes a media file (Matroska/WebM, MP4, Annex B H.264/H.265), - for standard input, an RTSP camera (rtsp://host/path), testsrc, camera or camera:/dev/videoN."

// checkSource reports, before the server is asked anything, a --source that cannot work: a file
// that does not exist, is a directory or is empty, standard input that is a terminal, a camera
// device that does not exist, an RTSP URL that does not parse, or capture that is not built in.
func checkSource(env *Env, source string) error {
	switch {
	case capture.IsRTSPSpec(source):
		if err := capture.CheckRTSPURL(source); err != nil {
			return withHint(usageErrorf("--source %v", err), "An RTSP camera's URL is rtsp://[user:password@]host[:port]/path (rtsps:// for RTSP over TLS).")
		}
		return nil
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
	_, err := upload(ctx, env, o, nil)
	return err
}

// annexBCodec parses --codec.
func annexBCodec(name string) (codec.Codec, error) {
	switch strings.ToLower(name) {
	case "":
		return 0, nil
	case "h264", "h.264", "avc":
		return codec.H264, nil
	case "h265", "h.265", "hevc":
		return codec.H265, nil
	}
	return 0, fmt.Errorf("--codec %q: want h264 or h265", name)
}
