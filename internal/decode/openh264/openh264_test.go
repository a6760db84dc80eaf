//go:build cgo && !x264

package openh264_test

import (
	"bytes"
	"image/jpeg"
	"testing"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/decodetest"
	"github.com/openkvs/kvs/internal/decode/openh264"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv/codec"
)

func newDecoder(t *testing.T) *openh264.Decoder {
	t.Helper()
	d, err := openh264.New()
	if err != nil {
		t.Fatal(err)
	}
	if !d.Decodes(codec.H264) || d.Decodes(codec.H265) {
		t.Fatalf("%s: Decodes H.264 %v, H.265 %v; want only H.264", d, d.Decodes(codec.H264), d.Decodes(codec.H265))
	}
	return d
}

// TestKeyframesAndRun decodes the H.264 clip (High profile, CABAC, B-frames) in process: every
// keyframe as a run of its own, then a whole GOP as one run with pictures wanted out of
// presentation order. Each image must be the frame ffmpeg shows at that place (closest of all the
// clip's frames) and within 3 of it on average.
func TestKeyframesAndRun(t *testing.T) {
	d := newDecoder(t)
	c := decodetest.LoadClip(t, "../../../testdata/h264.mkv")
	ref := decodetest.ReferenceFrames(t, "../../../testdata/h264.mkv", 160, 120)
	keys := c.Keyframes()

	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 160, Height: 120, Format: decode.JPEG, Quality: 95}
	var want []int
	for _, k := range keys {
		job.Want = append(job.Want, len(job.Frames))
		job.Frames = append(job.Frames, decode.Frame{Data: c.Frames[k].Data, PTS: c.Frames[k].PTS, Start: true})
		want = append(want, c.PresentationIndex(k))
	}
	// The third GOP as one run after the keyframes: output positions continue from len(keys).
	gop := c.Frames[keys[2]:keys[3]]
	base := len(job.Frames)
	for i, f := range gop {
		job.Frames = append(job.Frames, decode.Frame{Data: f.Data, PTS: f.PTS, Start: i == 0})
	}
	for _, p := range []int{1, 7, 13, 24} {
		job.Want = append(job.Want, base+p)
		want = append(want, c.PresentationIndex(keys[2])+p)
	}
	imgs, err := d.Decode(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		if img == nil {
			t.Errorf("image %d (frame %d): none", i, want[i])
			continue
		}
		pic, err := jpeg.Decode(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		if b := pic.Bounds(); b.Dx() != 160 || b.Dy() != 120 {
			t.Fatalf("image %d is %v, want 160x120", i, b)
		}
		if best, diff := decodetest.Closest(pic, ref), decodetest.MeanAbsDiff(pic, ref[want[i]]); best != want[i] || diff > 3 {
			t.Errorf("image %d: closest to frame %d (difference to frame %d: %.2f), want frame %d", i, best, want[i], diff, want[i])
		}
	}
}

// TestAgreesWithFFmpeg: the same keyframe decoded by OpenH264 and by ffmpeg gives the same
// picture, full size, within JPEG noise.
func TestAgreesWithFFmpeg(t *testing.T) {
	d := newDecoder(t)
	testutil.NeedTool(t, "ffmpeg")
	ff, err := decode.NewFFmpeg("")
	if err != nil {
		t.Fatal(err)
	}
	c := decodetest.LoadClip(t, "../../../testdata/h264.mkv")
	k := c.Keyframes()[1]
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 320, Height: 240, Format: decode.JPEG, Quality: 100,
		Frames: []decode.Frame{{Data: c.Frames[k].Data, Start: true}}, Want: []int{0}}
	a, err := d.Decode(t.Context(), job)
	if err != nil || a[0] == nil {
		t.Fatalf("openh264: %v", err)
	}
	b, err := ff.Decode(t.Context(), job)
	if err != nil || b[0] == nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	pa, _ := jpeg.Decode(bytes.NewReader(a[0]))
	ref := decodetest.ReferenceFrames(t, "../../../testdata/h264.mkv", 320, 240)[c.PresentationIndex(k)]
	pb, _ := jpeg.Decode(bytes.NewReader(b[0]))
	da, db := decodetest.MeanAbsDiff(pa, ref), decodetest.MeanAbsDiff(pb, ref)
	t.Logf("mean luma difference to ffmpeg's own decode: openh264 %.3f, ffmpeg decoder %.3f", da, db)
	if da > 1.5 || db > 1.5 {
		t.Errorf("differences %.3f (openh264), %.3f (ffmpeg): want both under 1.5", da, db)
	}
}

// TestBadFrame: garbage gives no picture and no error (decode.Chain then tries the next decoder).
func TestBadFrame(t *testing.T) {
	d := newDecoder(t)
	c := decodetest.LoadClip(t, "../../../testdata/h264.mkv")
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 32, Height: 32, Format: decode.PNG,
		Frames: []decode.Frame{{Data: []byte{0, 0, 0, 6, 0x65, 0x88, 0xff, 0xff, 0xff, 0xff}, Start: true}, {Data: c.Frames[0].Data, Start: true}},
		Want:   []int{0, 1}}
	imgs, err := d.Decode(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	if imgs[0] != nil || imgs[1] == nil {
		t.Fatalf("images present %v %v, want only the second", imgs[0] != nil, imgs[1] != nil)
	}
}
