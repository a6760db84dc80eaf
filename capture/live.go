package capture

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Live capture: a test pattern or a camera, encoded to H.264 as it is captured.
//
// The sources are built on github.com/pion/mediadevices: its videotest driver (the test pattern)
// and its V4L2 camera driver give raw pictures, and an H.264 encoder chosen at build time turns them
// into Annex B access units. Build tags pick the encoder, because the two cannot be linked into one
// binary (duplicate C symbols):
//
//	cgo && !x264   openh264 (BSD, bundled static library; needs g++)   live_mediadevices.go, encoder_openh264.go
//	cgo && x264    libx264 (GPL; needs libx264-dev)                     live_mediadevices.go, encoder_x264.go
//	!cgo           no capture: OpenLive and ListCameras fail with ErrCaptureNotBuilt   live_nocgo.go
//
// This file holds what every build shares: the options, the source specs and the errors.

// Defaults for the zero fields of LiveOptions.
const (
	DefaultLiveWidth   = 640
	DefaultLiveHeight  = 480
	DefaultLiveFPS     = 30
	DefaultLiveBitrate = 1_000_000 // bits per second
)

// LiveOptions configures a live source. The zero value captures 640x480 at 30 fps, 1 Mbit/s, until
// the context given to OpenLive is cancelled, with the encoder's own keyframe cadence (2 s).
type LiveOptions struct {
	// Width and Height are the picture size in pixels (even numbers). A camera that does not offer
	// that size is opened at the size it offers nearest to it, and Notice is told; the track and
	// the SPS always carry the real size.
	Width, Height int
	// FPS is the frame rate to capture at, in frames per second. It paces the test pattern and is
	// asked of the camera; frame timestamps come from the capture clock either way.
	FPS float64
	// Bitrate is the encoder's target bit rate in bits per second.
	Bitrate int
	// Duration stops the source after this much capture time: ReadFrame returns io.EOF instead of
	// the first frame at or after it. 0 captures until ctx is cancelled.
	Duration time.Duration
	// KeyframeInterval, when positive, forces a keyframe on the first frame captured at least this
	// long after the previous keyframe, and turns the encoder's periodic keyframes off (openh264)
	// or makes them rare (x264). Set it to the Fragmenter's TargetDuration: every forced keyframe is
	// then at least TargetDuration after the one before it, so the Fragmenter cuts there and
	// fragments last TargetDuration plus at most about one frame interval.
	KeyframeInterval time.Duration
	// Notice, if set, receives recoverable oddities (a camera size that differs from the one
	// asked, empty encoder outputs skipped). It is called from ReadFrame's or OpenLive's goroutine.
	Notice func(msg string)
}

func (o *LiveOptions) notice(format string, args ...any) {
	if o.Notice != nil {
		o.Notice(fmt.Sprintf(format, args...))
	}
}

// Validate checks the options as OpenLive would, without opening anything: callers use it to
// report bad flags as usage errors.
func (o LiveOptions) Validate() error {
	_, err := o.withDefaults()
	return err
}

// withDefaults fills the zero fields and checks the others.
func (o LiveOptions) withDefaults() (LiveOptions, error) {
	o.Width = cmp.Or(o.Width, DefaultLiveWidth)
	o.Height = cmp.Or(o.Height, DefaultLiveHeight)
	o.FPS = cmp.Or(o.FPS, DefaultLiveFPS)
	o.Bitrate = cmp.Or(o.Bitrate, DefaultLiveBitrate)
	switch {
	case o.Width < 16 || o.Height < 16 || o.Width > 8192 || o.Height > 8192 || o.Width%2 != 0 || o.Height%2 != 0:
		return o, fmt.Errorf("live capture: picture size %dx%d: width and height must be even and between 16 and 8192", o.Width, o.Height)
	case !(o.FPS >= 0.5 && o.FPS <= 240):
		return o, fmt.Errorf("live capture: frame rate %v: must be between 0.5 and 240 fps", o.FPS)
	case o.Bitrate < 10_000 || o.Bitrate > 200_000_000:
		return o, fmt.Errorf("live capture: bit rate %d bit/s: must be between 10000 and 200000000", o.Bitrate)
	case o.Duration < 0:
		return o, fmt.Errorf("live capture: duration %v is negative", o.Duration)
	case o.KeyframeInterval < 0:
		return o, fmt.Errorf("live capture: keyframe interval %v is negative", o.KeyframeInterval)
	}
	return o, nil
}

// Live source specs, as --source takes them.
const (
	// SpecTestPattern is the moving test pattern (color bars and noise) of mediadevices' videotest
	// driver: no camera needed.
	SpecTestPattern = "testsrc"
	// SpecCamera is the first camera found (on Linux /dev/video0 when it is one).
	SpecCamera = "camera"
	// SpecCameraPrefix followed by a device path names one camera: "camera:/dev/video2".
	SpecCameraPrefix = "camera:"
)

// liveSpec is a parsed live source spec.
type liveSpec struct {
	testPattern bool
	camera      bool
	device      string // camera device path; "" for the first camera
}

// parseLiveSpec parses spec; ok is false when spec does not name a live source.
func parseLiveSpec(spec string) (s liveSpec, ok bool) {
	switch {
	case spec == SpecTestPattern:
		return liveSpec{testPattern: true}, true
	case spec == SpecCamera:
		return liveSpec{camera: true}, true
	case strings.HasPrefix(spec, SpecCameraPrefix):
		return liveSpec{camera: true, device: strings.TrimPrefix(spec, SpecCameraPrefix)}, true
	}
	return liveSpec{}, false
}

// IsLiveSpec reports whether spec names a live source ("testsrc", "camera", "camera:PATH") rather
// than a file or "-".
func IsLiveSpec(spec string) bool {
	_, ok := parseLiveSpec(spec)
	return ok
}

// OpenLive opens the live source named by spec: "testsrc" (a test pattern), "camera" (the first
// camera found) or "camera:/dev/videoN". It returns an error wrapping ErrNotLiveSource for any other
// spec (a file name, "-"), so that callers can fall back to Open; a file literally named
// "camera" can be given as "./camera".
//
// The source has one H.264 track (number 1, V_MPEG4/ISO/AVC, avcC built from the first keyframe's
// SPS and PPS, size from the SPS). OpenLive captures and encodes the first frame before returning.
// Frames are stamped from the capture clock: PTS = DTS = monotonic time since the first frame was
// captured, so gaps from dropped frames show as gaps. The Source also implements LiveClock.
//
// Cancelling ctx stops the capture at a frame boundary: ReadFrame returns the frames already
// captured and then io.EOF, so the last fragment can still be finished and uploaded. Cancelling the
// ctx given to ReadFrame instead makes it return ctx.Err(). ReadFrame never blocks for longer than
// the wait for the next captured frame. Close stops the capture and waits for it (for a stalled
// camera up to its read timeout, 5 s).
//
// In a binary built without cgo it fails with ErrCaptureNotBuilt.
func OpenLive(ctx context.Context, spec string, opts LiveOptions) (Source, error) {
	s, ok := parseLiveSpec(spec)
	if !ok {
		return nil, fmt.Errorf("%q: %w", spec, ErrNotLiveSource)
	}
	if s.camera && s.device == "" && strings.HasPrefix(spec, SpecCameraPrefix) {
		return nil, fmt.Errorf("%q: name the camera device after the colon, e.g. camera:/dev/video0", spec)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return openLive(ctx, s, opts)
}

// LiveClock is implemented by the Sources OpenLive returns.
type LiveClock interface {
	// Start returns the wall-clock time at which the first frame (PTS 0) was captured. Pass
	// Start().Sub(time.Unix(0, 0)) as FragmenterConfig.Base for absolute producer timecodes.
	Start() time.Time
}

// CameraInfo describes one camera, as ListCameras finds it.
type CameraInfo struct {
	// Device is the device path, "/dev/video0" on Linux; "camera:" + Device opens it.
	Device string
	// Name is the driver's name for it (on Linux the V4L2 card name and bus), "" when unknown.
	Name string
	// Formats are the pixel formats and sizes it offers, in a stable order.
	Formats []CameraFormat
	// Err is set when the camera could not be opened to ask for its formats.
	Err error
}

// CameraFormat is one pixel format and picture size a camera offers.
type CameraFormat struct {
	// PixelFormat is the mediadevices frame format: "YUYV", "MJPEG", "NV12", "I420", ...
	PixelFormat   string
	Width, Height int
	// FrameRates lists the frame rates offered at this size, in frames per second, highest
	// first; empty when the driver does not tell.
	FrameRates []float64
}

// ListCameras returns the cameras found, sorted by device path (video0, video1, ..., video10). An
// empty list is not an error. A camera that cannot be opened is listed with Err set. Nothing but
// cameras is listed (not the test pattern). In a binary built without cgo it fails with
// ErrCaptureNotBuilt.
func ListCameras() ([]CameraInfo, error) { return listCameras() }

// CaptureBuilt reports whether this binary has camera and test-pattern capture, and with which
// H.264 encoder ("openh264" or "x264"; "" when none).
func CaptureBuilt() (ok bool, encoder string) { return encoderName != "", encoderName }

// Errors of the live sources. They are wrapped with details; match with errors.Is.
var (
	// ErrNotLiveSource is returned by OpenLive for a spec that is not "testsrc", "camera" or
	// "camera:PATH".
	ErrNotLiveSource = errors.New("not a live source spec (testsrc, camera or camera:/dev/videoN)")
	// ErrCaptureNotBuilt is returned by OpenLive and ListCameras in a binary built without cgo.
	ErrCaptureNotBuilt = errors.New("camera/test-pattern capture is not built into this binary (it was built with CGO_ENABLED=0); " +
		"get a build that has it: `CGO_ENABLED=1 go install github.com/openkvs/kvs/cmd/kvs@latest` with a C/C++ compiler (g++) installed, " +
		"or the release archive whose name says capture (kvs_<version>_linux_amd64_capture.tar.gz)")
	// ErrNoCamera is returned by OpenLive("camera") when no camera is found.
	ErrNoCamera = errors.New("no camera found")
)
