//go:build cgo

package capture

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/mediadevices/pkg/frame"
	"github.com/pion/mediadevices/pkg/prop"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// testPattern is held by the tests that open a live source: the test pattern is one device for the
// whole process, which only one capture may open at a time.
var testPattern sync.Mutex

// TestTestPatternFragments runs the test pattern for 2 s at 320x240, 15 fps through a Fragmenter
// cutting 500 ms fragments, as put-media does, and checks the stream's structure, then plays the
// fragments with ffprobe. Timing assertions are ranges wide enough for a loaded machine.
func TestTestPatternFragments(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	testutil.Slow(t)
	const (
		fps      = 15
		duration = 2 * time.Second
		target   = 500 * time.Millisecond
	)
	src, err := OpenLive(t.Context(), SpecTestPattern, LiveOptions{
		Width: 320, Height: 240, FPS: fps, Bitrate: 300_000, Duration: duration, KeyframeInterval: target,
	})
	if err != nil {
		t.Fatal(err)
	}
	tracks := src.Tracks()
	if len(tracks) != 1 || tracks[0].CodecID != codec.CodecIDH264 || tracks[0].Type != mkv.TrackTypeVideo {
		t.Fatalf("tracks %+v", tracks)
	}
	if tracks[0].Width != 320 || tracks[0].Height != 240 {
		t.Errorf("track size %dx%d", tracks[0].Width, tracks[0].Height)
	}
	ps, err := codec.ParseConfig(codec.H264, tracks[0].CodecPrivate)
	if err != nil {
		t.Fatalf("CodecPrivate: %v", err)
	}
	info, err := codec.ParseSPS(codec.H264, ps.SPS[0])
	if err != nil || info.Width != 320 || info.Height != 240 {
		t.Errorf("SPS %+v, %v; want 320x240", info, err)
	}
	if start := src.(LiveClock).Start(); time.Since(start) > time.Minute || time.Since(start) < 0 {
		t.Errorf("Start %v", start)
	}

	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: target})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	var frags []*mkv.Fragment
	var out []byte
	for {
		f, err := fr.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frags = append(frags, f)
		if out, err = mkv.AppendFragment(out, f); err != nil {
			t.Fatal(err)
		}
	}

	frames, keyframes := 0, 0
	last := int64(-1)
	for i, f := range frags {
		if !f.Frames[0].Keyframe {
			t.Errorf("fragment %d does not start with a keyframe", i)
		}
		for _, fm := range f.Frames {
			if fm.Timecode <= last {
				t.Errorf("fragment %d: frame timecode %d after %d", i, fm.Timecode, last)
			}
			last = fm.Timecode
			if fm.Keyframe != codec.IsKeyframeAVCC(codec.H264, fm.Data) {
				t.Errorf("fragment %d: keyframe flag disagrees with the bitstream", i)
			}
			if fm.Keyframe {
				keyframes++
			}
			frames++
		}
		if i+1 < len(frags) {
			// Forced keyframes come on the first frame at least 1 s after the previous one.
			d := time.Duration(frags[i+1].Timecode-f.Timecode) * time.Millisecond
			if d < target || d >= 2*target {
				t.Errorf("fragment %d lasts %v, want [%v, %v)", i, d, target, 2*target)
			}
		}
	}
	// The frame slots the capture clock spans is fps × duration within 5%. The frames in them
	// depend on the machine's load (the test pattern's ticker drops ticks when the reader is late,
	// which shows as gaps), so only a floor is checked for those.
	first := frags[0].Frames[0].Timecode
	slots := int(math.Round(float64(last-first)/(1000.0/fps))) + 1
	t.Logf("%d fragments, %d frames in %d slots of the capture clock, %d keyframes, last frame at %d ms", len(frags), frames, slots, keyframes, last-first)
	if want := int(duration / target); len(frags) < want-1 || len(frags) > want+1 {
		t.Errorf("%d fragments, want about %d", len(frags), want)
	}
	if want := fps * int(duration/time.Second); slots < want*95/100 || slots > want*105/100 || frames > slots+1 || frames < want/2 {
		t.Errorf("%d frames in %d slots, want about %d", frames, slots, want)
	}
	if last-first > duration.Milliseconds() { // frames are before Duration; timecodes are rounded to the ms
		t.Errorf("a frame at %d ms, after the %v duration", last-first, duration)
	}
	if keyframes != len(frags) {
		t.Errorf("%d keyframes in %d fragments: want one keyframe per fragment (openh264 periodic IDRs off)", keyframes, len(frags))
	}

	ffprobe := testutil.NeedTool(t, "ffprobe")
	path := filepath.Join(t.TempDir(), "testsrc.mkv")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := exec.CommandContext(t.Context(), ffprobe, "-v", "error", "-count_frames",
		"-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
			Frames    string `json:"nb_read_frames"`
		}
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		t.Fatal(err)
	}
	if len(probe.Streams) != 1 {
		t.Fatalf("ffprobe: %s", b)
	}
	if s := probe.Streams[0]; s.CodecName != "h264" || s.Width != 320 || s.Height != 240 || s.Frames != itoa(frames) {
		t.Errorf("ffprobe: %s %dx%d with %s frames, want h264 320x240 with %d", s.CodecName, s.Width, s.Height, s.Frames, frames)
	}
}

// TestLiveKeyframeIntervalAtMaxDuration runs the test pattern as put-media does with a
// --fragment-duration at the longest fragment KVS takes: KeyframeInterval, TargetDuration and
// MaxDuration all equal, 900 ms at 5 fps (frames every 200 ms). The forced keyframe must be the
// first picture captured at least KeyframeInterval after the previous keyframe, so that no frame
// of a fragment is later than MaxDuration after its keyframe: else the Fragmenter has to cut the
// GOP and the next fragment starts with a non-keyframe.
func TestLiveKeyframeIntervalAtMaxDuration(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	testutil.Slow(t)
	const interval = 900 * time.Millisecond
	src, err := OpenLive(t.Context(), SpecTestPattern, LiveOptions{
		Width: 160, Height: 120, FPS: 5, Bitrate: 100_000, Duration: 3 * time.Second, KeyframeInterval: interval,
	})
	if err != nil {
		t.Fatal(err)
	}
	var forced []time.Duration
	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: interval, MaxDuration: interval,
		OnForcedCut: func(tc time.Duration) { forced = append(forced, tc) }})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	n := 0
	for ; ; n++ {
		f, err := fr.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !f.Frames[0].Keyframe {
			t.Errorf("fragment %d (timecode %d ms, %d frames) does not start with a keyframe", n, f.Timecode, len(f.Frames))
		}
	}
	if len(forced) > 0 {
		t.Errorf("%d of %d fragments cut inside a GOP at MaxDuration (at %v)", len(forced), n, forced)
	}
}

// TestLiveStop cancels the context given to OpenLive: ReadFrame must return the frames already
// captured and then io.EOF (not an error), and keep returning io.EOF.
func TestLiveStop(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	src, err := OpenLive(ctx, SpecTestPattern, LiveOptions{Width: 160, Height: 120, FPS: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	n := 0
	for ; n < 5; n++ {
		f, err := src.ReadFrame(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := splitNALUs(walkAVCC, f.Data); err != nil {
			t.Fatalf("frame %d not length-prefixed: %v", n, err)
		}
	}
	stop()
	for ; ; n++ {
		_, err := src.ReadFrame(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after stop: %v, want io.EOF", err)
		}
		if n > 100 {
			t.Fatal("still reading frames long after the stop")
		}
	}
	if _, err := src.ReadFrame(t.Context()); !errors.Is(err, io.EOF) {
		t.Errorf("after io.EOF: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestLiveReadCancelled cancels only ReadFrame's ctx: it returns ctx.Err(), and the source goes on.
func TestLiveReadCancelled(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	src, err := OpenLive(t.Context(), SpecTestPattern, LiveOptions{Width: 160, Height: 120, FPS: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.ReadFrame(t.Context()); err != nil { // the first frame, read by OpenLive
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := src.ReadFrame(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled (or a frame already captured)", err)
	}
	if _, err := src.ReadFrame(t.Context()); err != nil {
		t.Errorf("after a cancelled read: %v", err)
	}
}

// TestLiveCloseUnblocks closes the source while ReadFrame waits for a frame.
func TestLiveCloseUnblocks(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	src, err := OpenLive(t.Context(), SpecTestPattern, LiveOptions{Width: 160, Height: 120, FPS: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadFrame(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.ReadFrame(t.Context())
		done <- err
	}()
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-done; err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("ReadFrame during Close: %v", err)
	}
}

func TestCameraErrors(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	for _, tc := range []struct {
		name, spec string
		want       []string
		is         error
	}{
		{name: "missing device", spec: "camera:/dev/video99", want: []string{"/dev/video99", "ls /dev/video*", "group video"}, is: fs.ErrNotExist},
		{name: "not a camera", spec: "camera:" + os.DevNull, want: []string{os.DevNull, "list-devices"}},
		{name: "empty device", spec: "camera:", want: []string{"camera:/dev/video0"}},
		{name: "file", spec: "clip.mkv", is: ErrNotLiveSource},
		{name: "bad size", spec: "testsrc", want: []string{"even"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LiveOptions{}
			if tc.name == "bad size" {
				opts.Width = 321
			}
			src, err := OpenLive(t.Context(), tc.spec, opts)
			if err == nil {
				src.Close()
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// TestFirstCamera opens "camera": with no camera here it must say none was found; with one, it
// must work or name the camera in its error.
func TestFirstCamera(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	cams, err := ListCameras()
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenLive(t.Context(), SpecCamera, LiveOptions{Duration: 500 * time.Millisecond})
	switch {
	case len(cams) == 0:
		if !errors.Is(err, ErrNoCamera) || !strings.Contains(err.Error(), "no camera found") {
			t.Errorf("no cameras: error %v, want ErrNoCamera", err)
		}
	case err != nil:
		if !strings.Contains(err.Error(), "/dev/video") {
			t.Errorf("error %q does not name the camera", err)
		}
		t.Logf("camera present but not usable: %v", err)
	default:
		t.Logf("camera %s opened", cams[0].Device)
		src.Close()
	}
	if len(cams) > 0 {
		t.Logf("cameras: %+v", cams)
	}
	if ok, enc := CaptureBuilt(); !ok || enc == "" {
		t.Errorf("CaptureBuilt() = %v, %q in a cgo build", ok, enc)
	}
}

func TestChooseFormat(t *testing.T) {
	t.Parallel()
	p := func(f frame.Format, w, h int, fps float32) prop.Media {
		return prop.Media{Video: prop.Video{FrameFormat: f, Width: w, Height: h, FrameRate: fps}}
	}
	offered := []prop.Media{
		p(frame.FormatMJPEG, 1280, 720, 30),
		p(frame.FormatYUYV, 1280, 720, 10),
		p(frame.FormatMJPEG, 640, 480, 30),
		p(frame.FormatYUYV, 640, 480, 30),
		p(frame.FormatYUYV, 640, 480, 15),
		p(frame.FormatZ16, 320, 240, 30),
		p(frame.FormatYUYV, 352, 288, 0),
	}
	for _, tc := range []struct {
		name          string
		width, height int
		fps           float64
		want          prop.Media
	}{
		{name: "exact size, raw preferred", width: 640, height: 480, fps: 30, want: offered[3]},
		{name: "lowest rate at or above", width: 640, height: 480, fps: 12, want: offered[4]},
		{name: "rate above beats raw", width: 1280, height: 720, fps: 25, want: offered[0]},
		{name: "only slower rates: highest", width: 1280, height: 720, fps: 60, want: offered[0]},
		{name: "nearest size, depth skipped", width: 320, height: 240, fps: 30, want: offered[6]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := chooseFormat(offered, LiveOptions{Width: tc.width, Height: tc.height, FPS: tc.fps})
			if !ok || got.Video != tc.want.Video {
				t.Errorf("got %+v, want %+v", got.Video, tc.want.Video)
			}
		})
	}
	if _, ok := chooseFormat([]prop.Media{p(frame.FormatZ16, 640, 480, 30)}, LiveOptions{Width: 640, Height: 480, FPS: 30}); ok {
		t.Error("a depth-only camera has a usable format")
	}
}

func TestGroupFormats(t *testing.T) {
	t.Parallel()
	p := func(f frame.Format, w, h int, fps float32) prop.Media {
		return prop.Media{Video: prop.Video{FrameFormat: f, Width: w, Height: h, FrameRate: fps}}
	}
	got := groupFormats([]prop.Media{
		p(frame.FormatYUYV, 640, 480, 15), p(frame.FormatMJPEG, 1280, 720, 30), p(frame.FormatYUYV, 640, 480, 30),
		p(frame.FormatYUYV, 320, 240, 0), p(frame.FormatYUYV, 640, 480, 30),
	})
	b, _ := json.Marshal(got)
	want := `[{"PixelFormat":"MJPEG","Width":1280,"Height":720,"FrameRates":[30]},` +
		`{"PixelFormat":"YUYV","Width":320,"Height":240,"FrameRates":[]},` +
		`{"PixelFormat":"YUYV","Width":640,"Height":480,"FrameRates":[30,15]}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestNaturalCompare(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"/dev/video2", "/dev/video10", -1},
		{"/dev/video10", "/dev/video2", 1},
		{"/dev/video0", "/dev/video0", 0},
		{"/dev/video1", "/dev/vide", 1},
	} {
		if got := naturalCompare(tc.a, tc.b); got != tc.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
