//go:build cgo && !x264

package openh264_test

import (
	"testing"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/decodetest"
	"github.com/openkvs/kvs/internal/decode/openh264"
	"github.com/openkvs/kvs/mkv/codec"
)

// FuzzDecode: OpenH264 runs inside kvs server (GetImages' small H.264 jobs) on media any producer
// uploaded, so a malformed bitstream must give an error or no picture, never a crash of the
// process. The input is the clip's first GOP with bytes of the fuzzer's at an offset into it,
// and a codec private data of its own (the second half).
func FuzzDecode(f *testing.F) {
	c := decodetest.LoadClip(f, "../../../testdata/h264.mkv")
	keys := c.Keyframes()
	gop := c.Frames[keys[0]:keys[1]]
	f.Add(uint16(0), []byte{}, false)
	f.Add(uint16(40), []byte{0xff, 0xff, 0xff, 0xff}, false)
	f.Add(uint16(7), []byte{0x00, 0x00, 0x01, 0x65}, true)
	d, err := openh264.New()
	if err != nil {
		f.Skip(err)
	}
	f.Fuzz(func(t *testing.T, at uint16, patch []byte, private bool) {
		job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 64, Height: 48,
			Format: decode.JPEG, Quality: 50}
		if private {
			job.CodecPrivate = append(append([]byte{}, c.CodecPrivate[:min(len(c.CodecPrivate), int(at)%8)]...), patch...)
		}
		for i, fr := range gop {
			data := append([]byte{}, fr.Data...)
			if !private && i == int(at)%len(gop) {
				off := int(at) % max(1, len(data))
				data = append(data[:off], append(append([]byte{}, patch...), data[min(len(data), off+len(patch)):]...)...)
			}
			job.Frames = append(job.Frames, decode.Frame{Data: data, PTS: fr.PTS, Start: i == 0})
		}
		job.Want = []int{0, len(job.Frames) - 1}
		if err := job.Validate(); err != nil {
			return
		}
		imgs, err := d.Decode(t.Context(), job) // with a patch, an error or no picture is fine: a crash is not
		if len(patch) == 0 && !private {
			if err != nil {
				t.Fatalf("the clip's GOP unchanged: %v", err)
			}
			if imgs[0] == nil || imgs[1] == nil {
				t.Fatalf("the clip's GOP unchanged: pictures %v, %v", imgs[0] != nil, imgs[1] != nil)
			}
		}
	})
}
