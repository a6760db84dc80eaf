//go:build cgo && x264

package capture

import (
	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/x264"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/prop"
)

// encoderName is the H.264 encoder linked into this binary.
const encoderName = "x264"

// newH264Encoder returns a libx264 encoder over r (preset veryfast, tune zerolatency: no B-frames,
// no lookahead, one access unit per picture read). keyframeEvery is x264's keyint_max, only a
// maximum: scene cuts add keyframes, which is why fragments are cut on real keyframes. 0 means
// "only forced keyframes", approximated by a keyint_max of 10000 frames.
func newH264Encoder(r video.Reader, p prop.Media, bitrate, keyframeEvery int) (mdcodec.ReadCloser, error) {
	params, err := x264.NewParams()
	if err != nil {
		return nil, err
	}
	params.BitRate = bitrate
	params.Preset = x264.PresetVeryfast
	if keyframeEvery == 0 {
		keyframeEvery = 10000
	}
	params.KeyFrameInterval = keyframeEvery
	return params.BuildVideoEncoder(r, p)
}
