//go:build cgo

package capture

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/driver"
	"github.com/pion/mediadevices/pkg/driver/camera" // registers the cameras found at init (Linux: V4L2)
	_ "github.com/pion/mediadevices/pkg/driver/videotest"
	"github.com/pion/mediadevices/pkg/frame"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/prop"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// testPatternLabel is the label mediadevices' videotest driver registers itself under, as a
// camera; it is kept out of every camera lookup.
const testPatternLabel = "VideoTest"

// cameraHint tells how to find out why a camera is missing or cannot be opened.
const cameraHint = "check `ls /dev/video*` for the cameras there are, and that your user may open them (group video: `sudo usermod -aG video $USER`, then log in again)"

func openLive(ctx context.Context, spec liveSpec, opts LiveOptions) (Source, error) {
	var (
		d    driver.Driver
		name string
		p    prop.Media
		err  error
	)
	if spec.testPattern {
		name = "test pattern"
		if d, err = testPatternDriver(); err != nil {
			return nil, err
		}
		if err := d.Open(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p = prop.Media{Video: prop.Video{Width: opts.Width, Height: opts.Height, FrameRate: float32(opts.FPS), FrameFormat: frame.FormatYUYV}}
	} else {
		if d, name, p, err = openCamera(spec.device, opts); err != nil {
			return nil, err
		}
	}
	rec, ok := d.(driver.VideoRecorder)
	if !ok {
		d.Close()
		return nil, fmt.Errorf("%s: not a video source", name)
	}
	raw, err := rec.VideoRecord(p) // closes d on error
	if err != nil {
		return nil, fmt.Errorf("%s: start capture at %dx%d %s: %w", name, p.Width, p.Height, p.FrameFormat, err)
	}

	fps := opts.FPS
	if p.FrameRate > 0 {
		fps = float64(p.FrameRate)
	}
	keyframeEvery := 0 // forced keyframes only
	if opts.KeyframeInterval == 0 {
		keyframeEvery = max(1, int(math.Round(fps*DefaultTargetDuration.Seconds())))
	}
	s := &liveSource{
		name:        name,
		drv:         d,
		keyInterval: opts.KeyframeInterval,
		duration:    opts.Duration,
		notify:      opts.notice,
		frames:      make(chan capturedFrame, max(2, int(math.Ceil(fps)))),
		done:        make(chan struct{}),
	}
	period := time.Duration(math.Round(float64(time.Second) / fps)) // the track's DefaultDuration
	if fps > 0 {
		s.slack = period / 4 // as the Fragmenter's (slack)
	}
	// The capture time of a picture is taken as soon as the driver hands it over, before encoding.
	// A keyframe is forced there, on the picture's own capture time, so that it is the first
	// picture captured at least KeyframeInterval after the previous keyframe, less a quarter of a
	// frame (capture times wander by milliseconds: without it, a picture due on the interval
	// missed it as often as not and the next one, a frame later, was the keyframe; the
	// Fragmenter cuts with the same slack): deciding before the driver is read made it the
	// picture after that one, which a fragment as long as the Fragmenter's MaxDuration then ended
	// inside its GOP.
	stamped := video.ReaderFunc(func() (image.Image, func(), error) {
		img, release, err := raw.Read()
		s.captured = time.Now()
		if err == nil && s.keyInterval > 0 && !s.lastKey.IsZero() && s.captured.Sub(s.lastKey) >= s.keyInterval-s.slack {
			if ferr := s.force.ForceKeyFrame(); ferr != nil {
				release()
				return nil, func() {}, fmt.Errorf("force keyframe: %w", ferr)
			}
		}
		return img, release, err
	})
	encProp := prop.Media{Video: prop.Video{Width: p.Width, Height: p.Height, FrameRate: float32(fps), FrameFormat: p.FrameFormat}}
	s.enc, err = newH264Encoder(stamped, encProp, opts.Bitrate, keyframeEvery)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: %s encoder at %dx%d: %w", name, encoderName, p.Width, p.Height, err)
	}
	s.force, _ = s.enc.Controller().(mdcodec.KeyFrameController)
	if s.keyInterval > 0 && s.force == nil {
		s.enc.Close()
		d.Close()
		return nil, fmt.Errorf("%s: the %s encoder cannot force keyframes", name, encoderName)
	}

	// The capture runs until stop is cancelled: by ctx (the caller's stop signal) or by Close.
	s.stop, s.cancel = context.WithCancel(ctx)
	go s.run()

	if err := s.first(ctx, fps); err != nil {
		s.Close()
		return nil, err
	}
	s.track.DefaultDuration = period
	return s, nil
}

// capturedFrame is one encoded picture and the time its picture was captured.
type capturedFrame struct {
	at      time.Time
	data    []byte // length-prefixed NAL units
	key     bool
	skipped int // empty encoder outputs skipped just before this frame
}

// liveSource is the Source OpenLive returns. A goroutine (run) reads pictures from the driver
// through the encoder, stamps and converts them, and hands them to ReadFrame over a channel that
// holds up to a second of frames; when it is full the goroutine waits, and the driver drops
// pictures (their absence shows as a gap in the timestamps).
type liveSource struct {
	name        string
	drv         driver.Driver
	enc         mdcodec.ReadCloser
	force       mdcodec.KeyFrameController
	keyInterval time.Duration
	duration    time.Duration
	notify      func(format string, args ...any)

	stop   context.Context // done when the capture must end
	cancel context.CancelFunc

	// Owned by run until frames is closed; read by ReadFrame after that.
	frames   chan capturedFrame
	done     chan struct{} // closed when run has returned
	captured time.Time     // capture time of the picture the encoder read last
	lastKey  time.Time     // capture time of the last keyframe
	slack    time.Duration // a quarter of the frame period: how early a forced keyframe may be
	err      error         // why run ended, nil for a requested stop

	// Owned by the reader.
	track   mkv.Track
	t0      time.Time      // capture time of the first frame: PTS 0
	pending *capturedFrame // the first frame, read by OpenLive
	ended   bool
	endErr  error

	closeOnce sync.Once
	closeErr  error
}

func (s *liveSource) run() {
	defer close(s.done)
	defer close(s.frames)
	for s.stop.Err() == nil {
		skipped := 0
		var annexB []byte
		for {
			b, release, err := s.enc.Read()
			if err != nil {
				if s.stop.Err() == nil {
					s.err = fmt.Errorf("%s: capture: %w", s.name, err)
				}
				return
			}
			annexB = cloneBytes(b)
			release()
			if len(annexB) > 0 {
				break
			}
			if skipped++; skipped > 1000 {
				s.err = fmt.Errorf("%s: %s gave 1000 empty outputs in a row", s.name, encoderName)
				return
			}
		}
		data, err := codec.AppendAVCC(nil, annexB)
		if err != nil {
			s.err = fmt.Errorf("%s: %s output: %w", s.name, encoderName, err)
			return
		}
		f := capturedFrame{at: s.captured, data: data, key: codec.IsKeyframeAVCC(codec.H264, data), skipped: skipped}
		if f.key {
			s.lastKey = f.at
		}
		select {
		case s.frames <- f:
		case <-s.stop.Done():
			return
		}
	}
}

// first waits for the first keyframe with SPS and PPS, builds the track from them and keeps the
// frame for ReadFrame.
func (s *liveSource) first(ctx context.Context, fps float64) error {
	limit := max(10, int(4*fps))
	for dropped := 0; ; dropped++ {
		var f capturedFrame
		var ok bool
		select {
		case f, ok = <-s.frames:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			if s.err != nil {
				return s.err
			}
			return ctx.Err()
		}
		var sps, pps []byte
		_ = codec.WalkAVCC(f.data, 4, func(n []byte) error {
			switch codec.NALUType(codec.H264, n) {
			case codec.H264NALUSPS:
				sps = cloneBytes(n)
			case codec.H264NALUPPS:
				pps = cloneBytes(n)
			}
			return nil
		})
		if !f.key || sps == nil || pps == nil {
			if dropped >= limit {
				return fmt.Errorf("%s: %s gave no keyframe with SPS and PPS in its first %d frames", s.name, encoderName, dropped+1)
			}
			continue
		}
		track, _, err := videoTrack(codec.H264, nil, sps, pps)
		if err != nil {
			return fmt.Errorf("%s: %s output: %w", s.name, encoderName, err)
		}
		s.track = track
		if dropped > 0 {
			s.notify("%s: dropped %d frames before the first keyframe", s.name, dropped)
		}
		s.t0 = f.at
		s.pending = &f
		return nil
	}
}

// Tracks returns the single H.264 track (number 1).
func (s *liveSource) Tracks() []mkv.Track { return []mkv.Track{s.track} }

// Start returns the wall-clock time of the first frame (PTS 0).
func (s *liveSource) Start() time.Time { return s.t0 }

// ReadFrame returns the next captured frame. After the stop context given to OpenLive is done it
// returns the frames already captured, then io.EOF; when its own ctx is done it returns ctx.Err().
func (s *liveSource) ReadFrame(ctx context.Context) (Frame, error) {
	if s.ended {
		return Frame{}, s.endErr
	}
	if s.pending != nil {
		f := *s.pending
		s.pending = nil
		return s.emit(f)
	}
	// Duration is wall-clock time: a camera that stalls does not hold the end back.
	var deadline <-chan time.Time
	if s.duration > 0 {
		t := time.NewTimer(time.Until(s.t0.Add(s.duration)))
		defer t.Stop()
		deadline = t.C
	}
	for {
		// Frames already captured come first, even once the capture is stopping.
		select {
		case f, ok := <-s.frames:
			if !ok {
				return s.end(s.err)
			}
			return s.emit(f)
		default:
		}
		if s.stop.Err() != nil {
			return s.end(nil)
		}
		select {
		case f, ok := <-s.frames:
			if !ok {
				return s.end(s.err)
			}
			return s.emit(f)
		case <-deadline:
			s.cancel()
			return s.end(nil)
		case <-s.stop.Done():
			// loop: drain, then io.EOF
		case <-ctx.Done():
			if s.stop.Err() != nil {
				continue
			}
			return Frame{}, ctx.Err()
		}
	}
}

func (s *liveSource) emit(f capturedFrame) (Frame, error) {
	pts := f.at.Sub(s.t0)
	if s.duration > 0 && pts >= s.duration {
		s.cancel()
		return s.end(nil)
	}
	if f.skipped > 0 {
		s.notify("%s: skipped %d empty %s outputs", s.name, f.skipped, encoderName)
	}
	return Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: f.key, Data: f.data}, nil
}

// end makes every later ReadFrame return err, or io.EOF when err is nil.
func (s *liveSource) end(err error) (Frame, error) {
	if err == nil {
		err = io.EOF
	}
	s.ended, s.endErr = true, err
	return Frame{}, err
}

// Close stops the capture, waits for it (at most one frame interval; for a stalled camera up to
// its read timeout) and releases the encoder and the device. It is safe to call more than once and
// concurrently with ReadFrame, which then returns io.EOF.
func (s *liveSource) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		err := s.enc.Close()
		if derr := s.drv.Close(); err == nil {
			err = derr
		}
		if err != nil {
			s.closeErr = fmt.Errorf("%s: close: %w", s.name, err)
		}
	})
	return s.closeErr
}

// testPatternDriver returns mediadevices' videotest driver.
func testPatternDriver() (driver.Driver, error) {
	for _, d := range driver.GetManager().Query(driver.FilterVideoRecorder()) {
		if d.Info().Label == testPatternLabel {
			return d, nil
		}
	}
	return nil, errors.New("test pattern: the videotest driver is not registered")
}

// cameraDrivers returns the registered cameras, highest priority first (on Linux video0 is the
// system default), then by device path in natural order.
func cameraDrivers() []driver.Driver {
	var ds []driver.Driver
	for _, d := range driver.GetManager().Query(driver.FilterAnd(driver.FilterVideoRecorder(), driver.FilterDeviceType(driver.Camera))) {
		if d.Info().Label != testPatternLabel {
			ds = append(ds, d)
		}
	}
	slices.SortFunc(ds, func(a, b driver.Driver) int {
		if pa, pb := a.Info().Priority, b.Info().Priority; pa != pb {
			if pa > pb {
				return -1
			}
			return 1
		}
		return naturalCompare(cameraDevice(a), cameraDevice(b))
	})
	return ds
}

// cameraDevice returns the device path of a camera driver: on Linux the label is
// "by-id-or-path-name;videoN", and the device /dev/videoN.
func cameraDevice(d driver.Driver) string {
	label := d.Info().Label
	if i := strings.LastIndex(label, camera.LabelSeparator); i >= 0 {
		label = label[i+len(camera.LabelSeparator):]
	}
	if runtime.GOOS == "linux" && !strings.HasPrefix(label, "/") {
		return "/dev/" + label
	}
	return label
}

// cameraName returns the driver's name for a camera: "card (bus)" on Linux.
func cameraName(d driver.Driver) string {
	card, bus, _ := strings.Cut(d.Info().Name, camera.LabelSeparator)
	card, bus = strings.TrimSpace(card), strings.TrimSpace(bus)
	switch {
	case card == "":
		return bus
	case bus == "":
		return card
	}
	return card + " (" + bus + ")"
}

// naturalCompare orders strings with embedded numbers by value: video2 before video10.
func naturalCompare(a, b string) int {
	pa, na := splitNumber(a)
	pb, nb := splitNumber(b)
	if c := strings.Compare(pa, pb); c != 0 || na == nb {
		if c != 0 {
			return c
		}
		return strings.Compare(a, b)
	}
	if na < nb {
		return -1
	}
	return 1
}

func splitNumber(s string) (prefix string, n int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return s, -1
	}
	return s[:i], n
}

// openCamera finds and opens the camera at device ("" for the first one that opens) and picks the
// format nearest to opts.
func openCamera(device string, opts LiveOptions) (driver.Driver, string, prop.Media, error) {
	var candidates []driver.Driver
	if device != "" {
		if _, err := os.Stat(device); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, "", prop.Media{}, fmt.Errorf("camera %s: %w (%s)", device, fs.ErrNotExist, cameraHint)
			}
			return nil, "", prop.Media{}, fmt.Errorf("camera %s: %w (%s)", device, err, cameraHint)
		}
		want := device
		if real, err := filepath.EvalSymlinks(device); err == nil {
			want = real
		}
		for _, d := range cameraDrivers() {
			if cameraDevice(d) == want || filepath.Base(cameraDevice(d)) == filepath.Base(want) {
				candidates = append(candidates, d)
				break
			}
		}
		if len(candidates) == 0 {
			return nil, "", prop.Media{}, fmt.Errorf("camera %s: not a camera the V4L2 driver found when kvs started (is it a video capture device? `kvs list-devices` lists the cameras)", device)
		}
	} else {
		candidates = cameraDrivers()
		if len(candidates) == 0 {
			return nil, "", prop.Media{}, fmt.Errorf("camera: %w: no video capture device under /dev/video* (%s)", ErrNoCamera, cameraHint)
		}
	}
	var errs []error
	for _, d := range candidates {
		name := "camera " + cameraDevice(d)
		if err := d.Open(); err != nil {
			errs = append(errs, fmt.Errorf("%s: open: %w%s", name, err, openErrorHint(err)))
			continue
		}
		p, ok := chooseFormat(d.Properties(), opts)
		if !ok {
			d.Close()
			errs = append(errs, fmt.Errorf("%s: it offers no picture format kvs can read (I420, NV12, NV21, YUYV, UYVY or MJPEG)", name))
			continue
		}
		if p.Width != opts.Width || p.Height != opts.Height {
			opts.notice("%s offers no %dx%d: capturing at %dx%d", name, opts.Width, opts.Height, p.Width, p.Height)
		}
		return d, name, p, nil
	}
	if device == "" && len(errs) > 1 {
		return nil, "", prop.Media{}, fmt.Errorf("camera: none of the %d cameras found could be opened: %w", len(errs), errors.Join(errs...))
	}
	return nil, "", prop.Media{}, errs[0]
}

// openErrorHint explains the usual causes of a camera open error.
func openErrorHint(err error) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return " (your user may not open it: add it to group video with `sudo usermod -aG video $USER`, then log in again)"
	case errors.Is(err, syscall.EBUSY):
		return " (another program is using it)"
	}
	return ""
}

// formatRank orders the pixel formats kvs can read, raw before compressed; others are not usable.
var formatRank = map[frame.Format]int{
	frame.FormatI420: 0, frame.FormatNV12: 1, frame.FormatNV21: 2, frame.FormatYUYV: 3,
	frame.FormatYUY2: 3, frame.FormatUYVY: 4, frame.FormatMJPEG: 5,
}

// chooseFormat picks the camera format nearest to the size and frame rate asked: the exact size if
// offered, else the nearest size; then the lowest frame rate at or above the one asked, else the
// highest; then raw formats before MJPEG.
func chooseFormat(props []prop.Media, opts LiveOptions) (prop.Media, bool) {
	var best prop.Media
	found := false
	key := func(p prop.Media) []float64 {
		size := math.Abs(float64(p.Width-opts.Width)) + math.Abs(float64(p.Height-opts.Height))
		rate := 1e6 // unknown frame rate: after every known one
		if r := float64(p.FrameRate); r > 0 {
			if r >= opts.FPS-0.01 {
				rate = r - opts.FPS
			} else {
				rate = 1e3 + opts.FPS - r
			}
		}
		return []float64{size, rate, float64(formatRank[p.FrameFormat])}
	}
	for _, p := range props {
		if _, ok := formatRank[p.FrameFormat]; !ok || p.Width <= 0 || p.Height <= 0 {
			continue
		}
		if !found || slices.Compare(key(p), key(best)) < 0 {
			best, found = p, true
		}
	}
	return best, found
}

func listCameras() ([]CameraInfo, error) {
	ds := cameraDrivers()
	slices.SortFunc(ds, func(a, b driver.Driver) int { return naturalCompare(cameraDevice(a), cameraDevice(b)) })
	out := make([]CameraInfo, 0, len(ds))
	for _, d := range ds {
		info := CameraInfo{Device: cameraDevice(d), Name: cameraName(d)}
		if err := d.Open(); err != nil {
			info.Err = fmt.Errorf("open: %w%s", err, openErrorHint(err))
			out = append(out, info)
			continue
		}
		info.Formats = groupFormats(d.Properties())
		d.Close()
		out = append(out, info)
	}
	return out, nil
}

// groupFormats merges the (format, size, rate) triples a driver offers into one CameraFormat per
// format and size.
func groupFormats(props []prop.Media) []CameraFormat {
	type fk struct {
		f    string
		w, h int
	}
	rates := map[fk][]float64{}
	var keys []fk
	for _, p := range props {
		k := fk{string(p.FrameFormat), p.Width, p.Height}
		if _, ok := rates[k]; !ok {
			keys = append(keys, k)
			rates[k] = []float64{}
		}
		if r := math.Round(float64(p.FrameRate)*1000) / 1000; r > 0 && !slices.Contains(rates[k], r) {
			rates[k] = append(rates[k], r)
		}
	}
	slices.SortFunc(keys, func(a, b fk) int {
		if c := strings.Compare(a.f, b.f); c != 0 {
			return c
		}
		if a.w != b.w {
			return a.w - b.w
		}
		return a.h - b.h
	})
	out := make([]CameraFormat, 0, len(keys))
	for _, k := range keys {
		r := rates[k]
		slices.Sort(r)
		slices.Reverse(r)
		out = append(out, CameraFormat{PixelFormat: k.f, Width: k.w, Height: k.h, FrameRates: r})
	}
	return out
}
