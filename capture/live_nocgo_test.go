//go:build !cgo

package capture

import (
	"errors"
	"strings"
	"testing"
)

// TestNoCgoCapture checks that a binary without cgo says capture is not built in, and how to get it.
func TestNoCgoCapture(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{SpecTestPattern, SpecCamera, "camera:/dev/video0"} {
		src, err := OpenLive(t.Context(), spec, LiveOptions{})
		if err == nil {
			src.Close()
			t.Fatalf("%s: no error", spec)
		}
		if !errors.Is(err, ErrCaptureNotBuilt) {
			t.Errorf("%s: error %v, want ErrCaptureNotBuilt", spec, err)
		}
		for _, w := range []string{"not built into this binary", "CGO_ENABLED=1 go install", "g++", "capture"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", spec, err, w)
			}
		}
	}
	if _, err := ListCameras(); !errors.Is(err, ErrCaptureNotBuilt) {
		t.Errorf("ListCameras: %v, want ErrCaptureNotBuilt", err)
	}
	if _, err := OpenLive(t.Context(), "clip.mkv", LiveOptions{}); !errors.Is(err, ErrNotLiveSource) {
		t.Errorf("a file: %v, want ErrNotLiveSource", err)
	}
	if ok, enc := CaptureBuilt(); ok || enc != "" {
		t.Errorf("CaptureBuilt() = %v, %q without cgo", ok, enc)
	}
}
