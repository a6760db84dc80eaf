//go:build !cgo

package capture

import (
	"context"
	"fmt"
)

// encoderName is the H.264 encoder linked into this binary: none without cgo.
const encoderName = ""

func openLive(_ context.Context, s liveSpec, _ LiveOptions) (Source, error) {
	what := "test pattern"
	if s.camera {
		what = "camera"
	}
	return nil, fmt.Errorf("%s: %w", what, ErrCaptureNotBuilt)
}

func listCameras() ([]CameraInfo, error) {
	return nil, fmt.Errorf("list cameras: %w", ErrCaptureNotBuilt)
}
