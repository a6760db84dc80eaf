package codec

import (
	"encoding/hex"
	"testing"
)

// The SPS of a monochrome (chroma_format_idc 0) High profile stream, 1366x766, from
//
//	ffmpeg -f lavfi -i testsrc=size=1366x766 -frames:v 2 -pix_fmt gray -c:v libx264 -f h264 gray.h264
//
// coded as 1376x768 with frame_crop_right_offset 10 and frame_crop_bottom_offset 2. For
// ChromaArrayType 0, CropUnitX is 1 (H.264 7.4.2.1.1, eq. 7-19), so the width is 1366; ffprobe says
// 1366x766.
func TestParseSPSMonochromeCropping(t *testing.T) {
	sps, _ := hex.DecodeString("67640020f36501581878bbc05b20000003002000000641e30632c0")
	info, err := ParseSPS(H264, sps)
	if err != nil {
		t.Fatal(err)
	}
	if info.Width != 1366 || info.Height != 766 {
		t.Errorf("size %dx%d, want 1366x766", info.Width, info.Height)
	}
}
