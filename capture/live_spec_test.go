package capture

import (
	"strings"
	"testing"
	"time"
)

func TestLiveSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec string
		want liveSpec
		ok   bool
	}{
		{spec: "testsrc", want: liveSpec{testPattern: true}, ok: true},
		{spec: "camera", want: liveSpec{camera: true}, ok: true},
		{spec: "camera:/dev/video2", want: liveSpec{camera: true, device: "/dev/video2"}, ok: true},
		{spec: "camera:", want: liveSpec{camera: true}, ok: true},
		{spec: "-"},
		{spec: "clip.mkv"},
		{spec: "./camera"},
		{spec: "testsrc.mkv"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, ok := parseLiveSpec(tc.spec)
			if got != tc.want || ok != tc.ok || IsLiveSpec(tc.spec) != tc.ok {
				t.Errorf("parseLiveSpec(%q) = %+v, %v; want %+v, %v", tc.spec, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestLiveOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts LiveOptions
		want string // "" for valid
	}{
		{name: "zero", opts: LiveOptions{}},
		{name: "odd width", opts: LiveOptions{Width: 641}, want: "even"},
		{name: "tiny", opts: LiveOptions{Width: 8, Height: 8}, want: "between 16 and 8192"},
		{name: "fps", opts: LiveOptions{FPS: 1000}, want: "frame rate"},
		{name: "negative fps", opts: LiveOptions{FPS: -1}, want: "frame rate"},
		{name: "bitrate", opts: LiveOptions{Bitrate: 5}, want: "bit rate"},
		{name: "duration", opts: LiveOptions{Duration: -time.Second}, want: "duration"},
		{name: "keyframe interval", opts: LiveOptions{KeyframeInterval: -time.Second}, want: "keyframe interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.opts.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
			if tc.name == "zero" && (o.Width != DefaultLiveWidth || o.Height != DefaultLiveHeight || o.FPS != DefaultLiveFPS || o.Bitrate != DefaultLiveBitrate) {
				t.Errorf("defaults %+v", o)
			}
		})
	}
}
