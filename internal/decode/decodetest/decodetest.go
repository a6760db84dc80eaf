// Package decodetest has the test helpers of the decoders: clips read from testdata, reference
// pictures decoded by the ffmpeg program, and picture comparison.
package decodetest

import (
	"bytes"
	"encoding/json"
	"image"
	_ "image/jpeg" // Images decodes JPEG
	_ "image/png"  // and PNG
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
)

// ProbeImage returns the codec and size ffprobe reads from an image file.
func ProbeImage(t testing.TB, path string) (codec string, width, height int) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffprobe"), "-v", "error",
		"-show_entries", "stream=codec_name,width,height", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var res struct {
		Streams []struct {
			CodecName     string `json:"codec_name"`
			Width, Height int
		}
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) != 1 {
		t.Fatalf("ffprobe %s: %s (%v)", path, out, err)
	}
	st := res.Streams[0]
	return st.CodecName, st.Width, st.Height
}

// Images reads what ffprobe reports of image files (codec name, width, height) while starting
// ffprobe once for a group of them: an ffprobe start costs its CPU mostly in loading its
// libraries, many times the decode of a small picture. The first file of a group is probed by
// ffprobe, and Go's image package must agree with it; every later one is decoded whole by Go's
// image/jpeg or image/png, which read the bitstream, not the file's name: a file that is not a
// complete JPEG or PNG of the size fails there. Those decoders share a package with kvs's
// encoders (internal/decode/encode.go), so they alone would miss a mistake both sides make; but
// every file of a group comes out of the same encoder call, so such a mistake shows in the first
// file, which ffprobe reads. A test keeps one Images per group of files it checks (the zero
// value is ready); it is not safe for concurrent use.
type Images struct{ probed bool }

// Probe returns the codec, as ffprobe names it ("mjpeg", "png"), and the size of the image file
// at path: from ffprobe for the first file of im, from Go's decoders for the others.
func (im *Images) Probe(t testing.TB, path string) (codec string, width, height int) {
	t.Helper()
	codec, width, height = goImage(t, path)
	if im.probed {
		return codec, width, height
	}
	im.probed = true
	c, w, h := ProbeImage(t, path)
	if c != codec || w != width || h != height {
		t.Errorf("%s: ffprobe reads %s %dx%d, Go's image package %s %dx%d", path, c, w, h, codec, width, height)
	}
	return c, w, h
}

// goImage decodes the image file at path with Go's decoders; it returns the codec as ffprobe
// names it, and the size.
func goImage(t testing.TB, path string) (codec string, width, height int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, format, err := image.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if format == "jpeg" {
		format = "mjpeg" // ffprobe's name of the codec
	}
	return format, img.Bounds().Dx(), img.Bounds().Dy()
}

// Frame is one video frame of a clip.
type Frame struct {
	Data     []byte // length-prefixed NAL units, as stored
	PTS      int64  // ticks
	Keyframe bool
}

// Clip is the first video track of an MKV file.
type Clip struct {
	CodecID      string
	CodecPrivate []byte
	Width        int
	Height       int
	Frames       []Frame // decode (file) order
}

// LoadClip reads the first video track of the MKV file at path.
func LoadClip(t testing.TB, path string) *Clip {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := mkv.NewReader(bytes.NewReader(data))
	c := &Clip{}
	var track uint64
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case mkv.EventTracks:
			for _, tr := range ev.Tracks {
				if tr.Type == mkv.TrackTypeVideo && track == 0 {
					track, c.CodecID, c.CodecPrivate = tr.Number, tr.CodecID, bytes.Clone(tr.CodecPrivate)
					c.Width, c.Height = int(tr.Width), int(tr.Height)
				}
			}
		case mkv.EventFrame:
			if ev.Frame.Track == track {
				c.Frames = append(c.Frames, Frame{Data: bytes.Clone(ev.Frame.Data), PTS: ev.Frame.Timecode, Keyframe: ev.Frame.Keyframe})
			}
		}
	}
	if track == 0 || len(c.Frames) == 0 {
		t.Fatalf("%s: no video frames", path)
	}
	return c
}

// Keyframes returns the indexes of the keyframes.
func (c *Clip) Keyframes() []int {
	var out []int
	for i, f := range c.Frames {
		if f.Keyframe {
			out = append(out, i)
		}
	}
	return out
}

// PresentationIndex returns the place of frame i when the frames are sorted by PTS.
func (c *Clip) PresentationIndex(i int) int {
	n := 0
	for _, f := range c.Frames {
		if f.PTS < c.Frames[i].PTS {
			n++
		}
	}
	return n
}

// ReferenceFrames decodes every frame of the file at path with the ffmpeg program, scaled to w×h
// (full range), and returns the luma planes in presentation order. The tests of a package share
// one decode per file and size: the frames are read-only.
func ReferenceFrames(t testing.TB, path string, w, h int) []*image.Gray {
	t.Helper()
	ff := testutil.NeedTool(t, "ffmpeg")
	v, _ := references.LoadOrStore(referenceKey{path, w, h}, new(reference))
	r := v.(*reference)
	r.once.Do(func() { r.frames, r.err = decodeReference(ff, path, w, h) })
	if r.err != nil {
		t.Fatalf("ffmpeg reference decode of %s: %v", path, r.err)
	}
	return r.frames
}

var references sync.Map // referenceKey → *reference

type referenceKey struct {
	path string
	w, h int
}

type reference struct {
	once   sync.Once
	frames []*image.Gray
	err    error
}

func decodeReference(ff, path string, w, h int) ([]*image.Gray, error) {
	out, err := exec.Command(ff, "-nostdin", "-v", "error", "-i", path, "-an", "-vf",
		"scale="+strconv.Itoa(w)+":"+strconv.Itoa(h)+":out_range=full", "-fps_mode", "passthrough",
		"-f", "rawvideo", "-pix_fmt", "gray", "pipe:1").Output()
	if err != nil {
		return nil, err
	}
	var frames []*image.Gray
	for len(out) >= w*h {
		frames = append(frames, &image.Gray{Pix: out[:w*h], Stride: w, Rect: image.Rect(0, 0, w, h)})
		out = out[w*h:]
	}
	return frames, nil
}

// MeanAbsDiff returns the mean absolute difference of the luma of a and b (0–255), which must
// have the same size. JPEG at quality 80–95 stays within about 2 of its source.
func MeanAbsDiff(a image.Image, b *image.Gray) float64 {
	return meanAbsDiff(luma(a, b.Rect), b)
}

// luma returns the luma of a over r, row by row: a YCbCr image's Y, else the Rec. 601 luma of
// its RGB, as JPEG decoders produce RGB from full-range YCbCr. Opaque RGBA and NRGBA images (the
// PNG decoder's) are read from their pixels; others through At, which allocates a color each.
func luma(a image.Image, r image.Rectangle) []uint8 {
	out := make([]uint8, 0, r.Dx()*r.Dy())
	rgb := func(cr, cg, cb uint32) uint8 { return uint8((299*cr + 587*cg + 114*cb + 500) / 1000) }
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			switch p := a.(type) {
			case *image.YCbCr:
				out = append(out, p.Y[p.YOffset(x, y)])
				continue
			case *image.RGBA:
				i := p.PixOffset(x, y)
				out = append(out, rgb(uint32(p.Pix[i]), uint32(p.Pix[i+1]), uint32(p.Pix[i+2])))
				continue
			case *image.NRGBA:
				if i := p.PixOffset(x, y); p.Pix[i+3] == 0xff {
					out = append(out, rgb(uint32(p.Pix[i]), uint32(p.Pix[i+1]), uint32(p.Pix[i+2])))
					continue
				}
			}
			cr, cg, cb, _ := a.At(x, y).RGBA()
			out = append(out, rgb(cr>>8, cg>>8, cb>>8))
		}
	}
	return out
}

// meanAbsDiff is MeanAbsDiff of a luma plane (luma over b.Rect) and b.
func meanAbsDiff(l []uint8, b *image.Gray) float64 {
	r := b.Rect
	var sum int
	i := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := b.Pix[(y-r.Min.Y)*b.Stride:]
		for x := range r.Dx() {
			d := int(l[i]) - int(row[x])
			sum += max(d, -d)
			i++
		}
	}
	return float64(sum) / float64(r.Dx()*r.Dy())
}

// Closest returns the index of the reference frame that a is closest to (MeanAbsDiff).
func Closest(a image.Image, refs []*image.Gray) int {
	best, bestD := -1, 0.0
	var l []uint8 // a's luma, once: the references are all of a's size
	for i, r := range refs {
		if l == nil || len(l) != r.Rect.Dx()*r.Rect.Dy() {
			l = luma(a, r.Rect)
		}
		if d := meanAbsDiff(l, r); best < 0 || d < bestD {
			best, bestD = i, d
		}
	}
	return best
}
