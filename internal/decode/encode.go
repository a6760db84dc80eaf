package decode

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"
)

// Encode returns pic, scaled to w×h when it has another size, as a JPEG (quality 1–100, the
// libjpeg scale image/jpeg uses) or a PNG (fastest compression: these images are made on request
// and thrown away). pic must be 4:2:0; it is not modified.
func Encode(pic *image.YCbCr, w, h int, f Format, quality int) ([]byte, error) {
	if pic.SubsampleRatio != image.YCbCrSubsampleRatio420 {
		return nil, fmt.Errorf("decode: picture subsampling %v: want 4:2:0", pic.SubsampleRatio)
	}
	if b := pic.Rect; b.Dx() != w || b.Dy() != h {
		pic = Scale(pic, w, h)
	}
	var buf bytes.Buffer
	switch f {
	case JPEG:
		buf.Grow(w * h / 4)
		if err := jpeg.Encode(&buf, pic, &jpeg.Options{Quality: quality}); err != nil {
			return nil, fmt.Errorf("decode: jpeg: %w", err)
		}
	case PNG:
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.Draw(rgba, rgba.Rect, pic, pic.Rect.Min, draw.Src)
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, rgba); err != nil {
			return nil, fmt.Errorf("decode: png: %w", err)
		}
	default:
		return nil, fmt.Errorf("decode: %v: want JPEG or PNG", f)
	}
	out := buf.Bytes()
	if cap(out) > 2*len(out) {
		// The buffer was sized for a busy picture; a smaller image (a night scene, a small
		// thumbnail) would keep all of it alive, in the picture cache too, which counts len.
		out = bytes.Clone(out)
	}
	return out, nil
}

// plane is one 8-bit sample plane.
type plane struct {
	pix          []byte
	w, h, stride int
}

// Scale returns a new 4:2:0 picture of w×h holding pic resampled: each plane is halved (2×2
// averages) while it is at least twice the size asked for, then resampled bilinearly, which
// together average over the source area without the aliasing of plain bilinear downscaling.
func Scale(pic *image.YCbCr, w, h int) *image.YCbCr {
	out := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	sw, sh := pic.Rect.Dx(), pic.Rect.Dy()
	cw, ch := (w+1)/2, (h+1)/2
	y0 := pic.YOffset(pic.Rect.Min.X, pic.Rect.Min.Y)
	c0 := pic.COffset(pic.Rect.Min.X, pic.Rect.Min.Y)
	resizePlane(plane{out.Y, w, h, out.YStride}, plane{pic.Y[y0:], sw, sh, pic.YStride})
	scw, sch := (sw+1)/2, (sh+1)/2
	resizePlane(plane{out.Cb, cw, ch, out.CStride}, plane{pic.Cb[c0:], scw, sch, pic.CStride})
	resizePlane(plane{out.Cr, cw, ch, out.CStride}, plane{pic.Cr[c0:], scw, sch, pic.CStride})
	return out
}

// resizePlane writes src resampled to dst's size into dst.
func resizePlane(dst, src plane) {
	for src.w >= 2*dst.w || src.h >= 2*dst.h {
		src = halve(src, src.w >= 2*dst.w, src.h >= 2*dst.h)
	}
	bilinear(dst, src)
}

// halve returns src with its width and/or height halved (rounded up; an odd last column or row
// is averaged with itself).
func halve(src plane, x, y bool) plane {
	w, h := src.w, src.h
	if x {
		w = (w + 1) / 2
	}
	if y {
		h = (h + 1) / 2
	}
	out := plane{make([]byte, w*h), w, h, w}
	for j := 0; j < h; j++ {
		r0, r1 := j, j
		if y {
			r0, r1 = 2*j, min(2*j+1, src.h-1)
		}
		a, b := src.pix[r0*src.stride:], src.pix[r1*src.stride:]
		row := out.pix[j*w : (j+1)*w]
		for i := range row {
			if x {
				c0, c1 := 2*i, min(2*i+1, src.w-1)
				row[i] = byte((int(a[c0]) + int(a[c1]) + int(b[c0]) + int(b[c1]) + 2) >> 2)
			} else {
				row[i] = byte((int(a[i]) + int(b[i]) + 1) >> 1)
			}
		}
	}
	return out
}

// bilinear resamples src into dst, sampling at pixel centres, in 16.16 fixed point.
func bilinear(dst, src plane) {
	if dst.w == src.w && dst.h == src.h {
		for j := 0; j < dst.h; j++ {
			copy(dst.pix[j*dst.stride:j*dst.stride+dst.w], src.pix[j*src.stride:])
		}
		return
	}
	// xs[i], xf[i]: the left source column of dst column i and the right column's weight (0–256).
	xs, xf := make([]int, dst.w), make([]int, dst.w)
	for i := range xs {
		xs[i], xf[i] = sampleAt(i, dst.w, src.w)
	}
	for j := 0; j < dst.h; j++ {
		y, fy := sampleAt(j, dst.h, src.h)
		y1 := min(y+1, src.h-1)
		a, b := src.pix[y*src.stride:], src.pix[y1*src.stride:]
		row := dst.pix[j*dst.stride : j*dst.stride+dst.w]
		for i := range row {
			x, fx := xs[i], xf[i]
			x1 := min(x+1, src.w-1)
			top := int(a[x])*(256-fx) + int(a[x1])*fx
			bot := int(b[x])*(256-fx) + int(b[x1])*fx
			row[i] = byte((top*(256-fy) + bot*fy + 1<<15) >> 16)
		}
	}
}

// sampleAt maps destination index i of n onto a source of m samples: the source index left of
// (or at) the sample point and the weight of the next one, in 1/256.
func sampleAt(i, n, m int) (int, int) {
	// Source coordinate of the centre of destination pixel i, times 256: ((i+0.5)·m/n − 0.5)·256.
	p := ((2*i+1)*m*256)/(2*n) - 128
	if p <= 0 {
		return 0, 0
	}
	x, f := p>>8, p&255
	if x >= m-1 {
		return m - 1, 0
	}
	return x, f
}
