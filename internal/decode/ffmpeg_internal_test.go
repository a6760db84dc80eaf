package decode

import "testing"

// TestPassthroughFlag: ffmpeg before 5.1 has no -fps_mode (Ubuntu 22.04 ships 4.4).
func TestPassthroughFlag(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"4.4.2-0ubuntu0.22.04.1", "-vsync"},
		{"5.1.9-0+deb12u1", "-fps_mode"},
		{"7.1", "-fps_mode"},
		{"N-113000-g3b1f5a7a0e", "-fps_mode"},
	} {
		f := &FFmpeg{path: "/nonexistent/ffmpeg", version: tc.version}
		if got := f.passthroughFlag(t.Context()); got != tc.want {
			t.Errorf("ffmpeg %s: %s, want %s", tc.version, got, tc.want)
		}
	}
}
