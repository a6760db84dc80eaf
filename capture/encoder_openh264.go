//go:build cgo && !x264

package capture

import (
	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/openh264"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/prop"
)

// encoderName is the H.264 encoder linked into this binary.
const encoderName = "openh264"

// newH264Encoder returns an openh264 encoder over r: Constrained Baseline, one IDR at the start and
// then only the forced ones when keyframeEvery is 0, else an IDR every keyframeEvery frames. Frame
// skipping is off: every picture read gives one access unit.
func newH264Encoder(r video.Reader, p prop.Media, bitrate, keyframeEvery int) (mdcodec.ReadCloser, error) {
	params, err := openh264.NewParams()
	if err != nil {
		return nil, err
	}
	params.BitRate = bitrate
	params.EnableFrameSkip = false
	params.IntraPeriod = uint(keyframeEvery)
	params.UsageType = openh264.CameraVideoRealTime
	return params.BuildVideoEncoder(r, p)
}
