package decode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/decodetest"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv/codec"
)

func ffmpegDecoder(t *testing.T) *decode.FFmpeg {
	t.Helper()
	testutil.Slow(t) // runs ffmpeg
	testutil.NeedTool(t, "ffmpeg")
	f, err := decode.NewFFmpeg("")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Probe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !f.Decodes(codec.H264) || !f.Decodes(codec.H265) {
		t.Fatalf("%s decodes neither H.264 nor H.265", f)
	}
	// The version comes from the banner of the same run: "ffmpeg 5.1.9-0+deb12u1 (/usr/bin/ffmpeg)".
	if v := strings.TrimPrefix(f.String(), "ffmpeg "); v == f.String() || v == "" || strings.HasPrefix(v, "(") {
		t.Fatalf("probed ffmpeg is %q: no version", f)
	}
	return f
}

// TestFFmpegKeyframes decodes every keyframe of the H.264 and H.265 clips as runs of one job and
// checks each image: its format, its size, and that it is the picture ffmpeg itself shows at that
// frame (mean absolute difference of the luma against a reference decode of the whole clip).
func TestFFmpegKeyframes(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	for _, tc := range []struct {
		clip   string
		codec  codec.Codec
		format decode.Format
		w, h   int
	}{
		{"h264.mkv", codec.H264, decode.JPEG, 320, 240},
		{"h264.mkv", codec.H264, decode.PNG, 160, 120},
		{"h265.mkv", codec.H265, decode.JPEG, 101, 77}, // odd sizes: chroma planes round up
	} {
		t.Run(tc.clip+"/"+tc.format.String(), func(t *testing.T) {
			t.Parallel()
			c := decodetest.LoadClip(t, "../../testdata/"+tc.clip)
			job := &decode.Job{Codec: tc.codec, CodecPrivate: c.CodecPrivate, Width: tc.w, Height: tc.h, Format: tc.format, Quality: 90}
			var keyIdx []int // index of each keyframe among the clip's frames in presentation order
			for _, k := range c.Keyframes() {
				job.Want = append(job.Want, len(job.Frames))
				job.Frames = append(job.Frames, decode.Frame{Data: c.Frames[k].Data, PTS: c.Frames[k].PTS, Start: true})
				keyIdx = append(keyIdx, c.PresentationIndex(k))
			}
			imgs, err := f.Decode(t.Context(), job)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != len(keyIdx) || len(keyIdx) < 2 {
				t.Fatalf("%d images for %d keyframes", len(imgs), len(keyIdx))
			}
			ref := decodetest.ReferenceFrames(t, "../../testdata/"+tc.clip, tc.w, tc.h)
			for i, img := range imgs {
				got := decodeImage(t, img, tc.format, tc.w, tc.h)
				if d := decodetest.MeanAbsDiff(got, ref[keyIdx[i]]); d > 4 || decodetest.Closest(got, ref) != keyIdx[i] {
					t.Errorf("keyframe %d: luma differs from ffmpeg's frame %d by %.2f on average", i, keyIdx[i], d)
				}
				if i > 0 {
					if d := decodetest.MeanAbsDiff(got, ref[keyIdx[i-1]]); d < 4 {
						t.Errorf("keyframe %d looks like the previous one (difference %.2f): the test cannot tell frames apart", i, d)
					}
				}
			}
		})
	}
}

// TestFFmpegRunOfFrames decodes a whole GOP of the H.264 clip (B-frames: decode order is not
// presentation order) as one run and asks for pictures at several output positions.
func TestFFmpegRunOfFrames(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	c := decodetest.LoadClip(t, "../../testdata/h264.mkv")
	keys := c.Keyframes()
	gop := c.Frames[keys[1]:keys[2]] // the second GOP
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 320, Height: 240, Format: decode.JPEG, Quality: 95,
		Want: []int{0, 3, 12, 24}}
	for i, fr := range gop {
		job.Frames = append(job.Frames, decode.Frame{Data: fr.Data, PTS: fr.PTS, Start: i == 0})
	}
	imgs, err := f.Decode(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	ref := decodetest.ReferenceFrames(t, "../../testdata/h264.mkv", 320, 240)
	first := c.PresentationIndex(keys[1])
	for i, p := range job.Want {
		got := decodeImage(t, imgs[i], decode.JPEG, 320, 240)
		if best := decodetest.Closest(got, ref); best != first+p {
			t.Errorf("output position %d: the image is closest to ffmpeg's frame %d, want %d", p, best, first+p)
		}
	}
}

// TestFFmpegBadRun: a run whose frame is garbage gives no picture; the other runs of the job
// still do.
func TestFFmpegBadRun(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	c := decodetest.LoadClip(t, "../../testdata/h264.mkv")
	keys := c.Keyframes()
	garbage := append([]byte{0, 0, 0, 8, 0x65}, bytes.Repeat([]byte{0xff}, 7)...) // an IDR slice of noise
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 64, Height: 48, Format: decode.JPEG, Quality: 80,
		Frames: []decode.Frame{{Data: c.Frames[keys[0]].Data, Start: true}, {Data: garbage, Start: true}, {Data: c.Frames[keys[2]].Data, PTS: 2, Start: true}},
		Want:   []int{0, 1, 2}}
	imgs, err := f.Decode(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	if imgs[0] == nil || imgs[1] != nil || imgs[2] == nil {
		t.Fatalf("images present: %v %v %v, want the good runs only", imgs[0] != nil, imgs[1] != nil, imgs[2] != nil)
	}
	decodeImage(t, imgs[2], decode.JPEG, 64, 48)
}

// TestFFmpegCancel: a cancelled context ends the process and Decode returns the context's error.
func TestFFmpegCancel(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	c := decodetest.LoadClip(t, "../../testdata/h264.mkv")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 64, Height: 48, Format: decode.JPEG, Quality: 80,
		Frames: []decode.Frame{{Data: c.Frames[0].Data, Start: true}}, Want: []int{0}}
	if _, err := f.Decode(ctx, job); err == nil {
		t.Fatal("Decode with a cancelled context succeeded")
	}
}

func TestJobValidate(t *testing.T) {
	ok := decode.Job{Codec: codec.H264, Frames: []decode.Frame{{Start: true}, {}}, Want: []int{0, 1}, Width: 1, Height: 1, Format: decode.JPEG, Quality: 1}
	for _, tc := range []struct {
		name string
		mod  func(j *decode.Job)
		ok   bool
	}{
		{"ok", func(*decode.Job) {}, true},
		{"png ignores quality", func(j *decode.Job) { j.Format, j.Quality = decode.PNG, 0 }, true},
		{"vp8", func(j *decode.Job) { j.Codec = 0 }, false},
		{"no frames", func(j *decode.Job) { j.Frames = nil }, false},
		{"first frame not a run start", func(j *decode.Job) { j.Frames = []decode.Frame{{}} }, false},
		{"too wide", func(j *decode.Job) { j.Width = 3841 }, false},
		{"zero height", func(j *decode.Job) { j.Height = 0 }, false},
		{"quality 0", func(j *decode.Job) { j.Quality = 0 }, false},
		{"quality 101", func(j *decode.Job) { j.Quality = 101 }, false},
		{"no format", func(j *decode.Job) { j.Format = 0 }, false},
		{"want out of range", func(j *decode.Job) { j.Want = []int{2} }, false},
		{"want descending", func(j *decode.Job) { j.Want = []int{1, 0} }, false},
		{"want twice", func(j *decode.Job) { j.Want = []int{1, 1} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := ok
			j.Frames = append([]decode.Frame(nil), ok.Frames...)
			tc.mod(&j)
			if err := j.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestOutputFrames: within a run pictures come out by PTS; runs follow each other.
func TestOutputFrames(t *testing.T) {
	j := decode.Job{Frames: []decode.Frame{
		{PTS: 0, Start: true}, {PTS: 3}, {PTS: 1}, {PTS: 2}, // I P B B
		{PTS: 10, Start: true}, {PTS: 12}, {PTS: 11},
	}}
	got := j.OutputFrames()
	want := []int{0, 2, 3, 1, 4, 6, 5}
	if len(got) != len(want) {
		t.Fatalf("OutputFrames %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("OutputFrames %v, want %v", got, want)
		}
	}
}

// decodeImage parses img as format and checks its size; it returns the picture.
func decodeImage(t *testing.T, img []byte, format decode.Format, w, h int) image.Image {
	t.Helper()
	if img == nil {
		t.Fatal("no image")
	}
	var pic image.Image
	var err error
	if format == decode.PNG {
		pic, err = png.Decode(bytes.NewReader(img))
	} else {
		pic, err = jpeg.Decode(bytes.NewReader(img))
	}
	if err != nil {
		t.Fatalf("%v image of %d bytes: %v", format, len(img), err)
	}
	if b := pic.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Fatalf("image %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	return pic
}

// TestEncodeScale: Encode scales a picture (down by 5.3×, and up) and the result keeps the
// picture's content: a left half dark and a right half bright stay so.
func TestEncodeScale(t *testing.T) {
	t.Parallel()
	pic := image.NewYCbCr(image.Rect(0, 0, 1706, 960), image.YCbCrSubsampleRatio420)
	for y := 0; y < 960; y++ {
		for x := 0; x < 1706; x++ {
			if x >= 853 {
				pic.Y[y*pic.YStride+x] = 235
			} else {
				pic.Y[y*pic.YStride+x] = 20
			}
		}
	}
	for i := range pic.Cb {
		pic.Cb[i], pic.Cr[i] = 128, 128
	}
	for _, size := range [][2]int{{320, 180}, {1, 1}, {3840, 2160}, {321, 181}} {
		b, err := decode.Encode(pic, size[0], size[1], decode.JPEG, 90)
		if err != nil {
			t.Fatal(err)
		}
		// A plain picture's JPEG is small: it must not keep the buffer sized for a busy one
		// (the picture cache counts only its length).
		if cap(b) > 2*len(b) {
			t.Errorf("%v: a %d-byte JPEG holds a %d-byte buffer", size, len(b), cap(b))
		}
		got, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got.Bounds().Dx() != size[0] || got.Bounds().Dy() != size[1] {
			t.Fatalf("%v: image %v", size, got.Bounds())
		}
		if size[0] < 4 {
			continue
		}
		lum := func(x int) uint32 { r, _, _, _ := got.At(x, size[1]/2).RGBA(); return r >> 8 }
		if l, r := lum(size[0]/8), lum(size[0]*7/8); l > 40 || r < 215 {
			t.Errorf("%v: left %d, right %d, want about 20 and 235", size, l, r)
		}
	}
}

// TestSplit: jobs under Frames frames go to Small, others to Large (here a side that decodes
// nothing, so that the side taken shows).
func TestSplit(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	c := decodetest.LoadClip(t, "../../testdata/h264.mkv")
	split := decode.Split{Small: decode.Chain{}, Large: f, Frames: 2}
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: 32, Height: 24, Format: decode.JPEG, Quality: 50,
		Frames: []decode.Frame{{Data: c.Frames[0].Data, Start: true}}, Want: []int{0}}
	if _, err := split.Decode(t.Context(), job); err == nil {
		t.Error("a 1-frame job went to Large")
	}
	job.Frames = append(job.Frames, decode.Frame{Data: c.Frames[c.Keyframes()[1]].Data, PTS: 1, Start: true})
	job.Want = []int{0, 1}
	imgs, err := split.Decode(t.Context(), job)
	if err != nil || imgs[0] == nil || imgs[1] == nil {
		t.Fatalf("a 2-frame job: %v", err)
	}
	if !split.Decodes(codec.H265) || (decode.Split{Small: decode.Chain{}, Large: decode.Chain{}}).Decodes(codec.H264) {
		t.Error("Decodes does not follow its sides")
	}
}

// TestCombine: with both decoders, jobs under SplitFrames frames try the in-process one first
// and bigger ones the program first, each falling back on the other; with one, that one alone;
// with neither, a Chain that decodes nothing.
func TestCombine(t *testing.T) {
	t.Parallel()
	f := ffmpegDecoder(t)
	none := decode.Chain{} // stands in for a decoder that decodes nothing
	for _, tc := range []struct {
		in, program decode.Decoder
		want        decode.Decoder
	}{
		{none, f, decode.Split{Small: decode.Chain{none, f}, Large: decode.Chain{f, none}, Frames: decode.SplitFrames}},
		{f, nil, decode.Chain{f}},
		{nil, f, decode.Chain{f}},
		{nil, nil, decode.Chain{}},
	} {
		if got := decode.Combine(tc.in, tc.program); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Combine(%v, %v) = %#v, want %#v", tc.in, tc.program, got, tc.want)
		}
	}
	if decode.Combine(nil, nil).Decodes(codec.H264) {
		t.Error("Combine of none decodes H.264")
	}
	if !decode.Combine(nil, f).Decodes(codec.H265) {
		t.Error("Combine with ffmpeg does not decode H.265")
	}
}

// TestFFmpegHoldsOnePicture: a job's wanted pictures are encoded as ffmpeg writes them, so a job
// of many large pictures (25 keyframe thumbnails of a 4K camera, one GetImages page) holds one raw
// picture at a time, not all of them until the process ends (25 × 12 MB at 3840x2160). Not
// parallel: it watches the heap of its own process.
func TestFFmpegHoldsOnePicture(t *testing.T) {
	f := ffmpegDecoder(t)
	c := decodetest.LoadClip(t, "../../testdata/h264.mkv")
	const w, h, runs = 1920, 1080, 25 // 3 MB a raw picture, 78 MB for the job
	job := &decode.Job{Codec: codec.H264, CodecPrivate: c.CodecPrivate, Width: w, Height: h, Format: decode.JPEG, Quality: 80}
	keys := c.Keyframes()
	for i := range runs {
		job.Want = append(job.Want, len(job.Frames))
		job.Frames = append(job.Frames, decode.Frame{Data: c.Frames[keys[i%len(keys)]].Data, PTS: int64(i), Start: true})
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		high := uint64(0)
		for {
			runtime.ReadMemStats(&m)
			high = max(high, m.HeapAlloc)
			select {
			case <-done:
				peak <- high
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	imgs, err := f.Decode(t.Context(), job)
	close(done)
	high := <-peak
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		if img == nil {
			t.Fatalf("image %d missing", i)
		}
	}
	raw := uint64(w*h + 2*((w+1)/2)*((h+1)/2))
	grew := high - min(high, base.HeapAlloc)
	t.Logf("the heap grew by %.1f MB at most", float64(grew)/(1<<20))
	if grew > 10*raw {
		t.Errorf("the heap grew by %.1f MB decoding %d pictures of %.1f MB: the raw pictures are held until ffmpeg ends", float64(grew)/(1<<20), runs, float64(raw)/(1<<20))
	}
}

// TestProbeSharedRun: servers started at once in one process (the tests, kvs bench with its own
// server) probe the same ffmpeg at the same time, and one run of ffmpeg -decoders answers them
// all. The ffmpeg here is a script that counts its runs and then runs the real one.
func TestProbeSharedRun(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	real := testutil.NeedTool(t, "ffmpeg")
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "ffmpeg")
	// The pause keeps the first run going while the others ask.
	body := fmt.Sprintf("#!/bin/sh\necho run >>%q\nsleep 0.3\nexec %q \"$@\"\n", runs, real)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			f, err := decode.NewFFmpeg(script)
			if err == nil {
				err = f.Probe(t.Context())
			}
			if err == nil && (!f.Decodes(codec.H264) || !strings.HasPrefix(f.String(), "ffmpeg ")) {
				err = fmt.Errorf("probed %s: no H.264 decoder or no version", f)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "run"); n != 1 {
		t.Errorf("%d probes at once ran ffmpeg %d times, want once", len(errs), n)
	}
}
