package decodetest

import (
	"image"
	"math/rand/v2"
	"testing"
)

// TestMeanAbsDiffByPixel: MeanAbsDiff reads RGBA, NRGBA and YCbCr images from their pixels as
// At would give them (Rec. 601 luma of the 8-bit RGB; Y of YCbCr).
func TestMeanAbsDiffByPixel(t *testing.T) {
	r := image.Rect(0, 0, 37, 21)
	rng := rand.New(rand.NewPCG(1, 2))
	ref := image.NewGray(r)
	for i := range ref.Pix {
		ref.Pix[i] = uint8(rng.IntN(256))
	}
	rgba, nrgba, ycc := image.NewRGBA(r), image.NewNRGBA(r), image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	for i := range rgba.Pix {
		rgba.Pix[i] = uint8(rng.IntN(256))
		nrgba.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			rgba.Pix[i], nrgba.Pix[i] = 0xff, 0xff
		}
	}
	nrgba.Pix[3] = 0x80 // one translucent pixel: At's premultiplied colour
	for i := range ycc.Y {
		ycc.Y[i] = uint8(rng.IntN(256))
	}
	for _, img := range []image.Image{rgba, nrgba, ycc, ref} {
		var sum float64
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				var l int
				if p, ok := img.(*image.YCbCr); ok {
					l = int(p.YCbCrAt(x, y).Y)
				} else {
					cr, cg, cb, _ := img.At(x, y).RGBA()
					l = int((299*(cr>>8) + 587*(cg>>8) + 114*(cb>>8) + 500) / 1000)
				}
				d := l - int(ref.GrayAt(x, y).Y)
				sum += float64(max(d, -d))
			}
		}
		want := sum / float64(r.Dx()*r.Dy())
		if got := MeanAbsDiff(img, ref); got != want {
			t.Errorf("%T: MeanAbsDiff %v, want %v", img, got, want)
		}
	}
}
