// Package decode turns coded H.264 and H.265 pictures into JPEG or PNG images, for GetImages.
//
// A Job is a list of runs: each run is frames of one track in decode order, starting at a random
// access point (a keyframe), decoded from there on its own. The images wanted are named by their
// place in the output (presentation) order, so that a decoder never has to match pictures to
// frames by anything but counting. Keyframe-only work is a Job whose runs are one keyframe each.
//
// Two decoders implement Decoder: FFmpeg runs the ffmpeg program (any codec it has; one process
// per Job, so its start-up cost is shared by the Job's pictures), and the openh264 subpackage
// decodes H.264 in process where the build links OpenH264 (cgo builds without the x264 tag, which
// capture links for its encoder). Both hand their pictures to Encode, so JPEGQuality means the same
// thing (the libjpeg quality scale of image/jpeg) whichever decoded them. Chain tries decoders in
// order.
//
// The package does no logging and holds no global state; all decoders are safe for concurrent use.
package decode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/openkvs/kvs/mkv/codec"
)

// Format is the image format of a Job's output.
type Format uint8

// Image formats of GetImages.
const (
	JPEG Format = iota + 1
	PNG
)

func (f Format) String() string {
	switch f {
	case JPEG:
		return "JPEG"
	case PNG:
		return "PNG"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Limits of a Job, from the GetImages model (WidthPixels 1–3840, HeightPixels 1–2160).
const (
	MaxWidth  = 3840
	MaxHeight = 2160
)

// Frame is one coded frame (access unit) as Matroska stores it: NAL units, each preceded by its
// length in the LengthSize bytes the track's CodecPrivate declares.
type Frame struct {
	Data []byte
	// PTS is the frame's presentation time in any unit, used only to order the run's pictures.
	PTS int64
	// Start says that a new run starts here: the frame is a random access point and is decoded
	// without any frame before it. Frames[0] of a Job always starts a run.
	Start bool
	// Lead says that the frame is decoded only so that the frames after it are whole: a run that
	// starts at an H.264 recovery point with periodic intra refresh begins with the GOP before it.
	// Its picture may be partly refreshed; it has an output position but is never wanted. The
	// first frame of a run with leads is the first lead, which has Start.
	Lead bool
}

// Job is one decoding task: frames of one track with one decoder configuration.
type Job struct {
	Codec codec.Codec
	// CodecPrivate is the track's avcC (H.264) or hvcC (H.265) record.
	CodecPrivate []byte
	// Frames are the runs, concatenated (see Frame.Start). Decoders do not modify them.
	Frames []Frame
	// Want lists, in ascending order, positions in the output order of the pictures to return:
	// output position p is the p-th picture when each run's pictures are sorted by PTS and the
	// runs follow each other. A run of n frames gives n pictures.
	Want []int
	// Width and Height are the size of every image, 1–3840 by 1–2160; pictures of another size
	// are scaled (stretched when the aspect ratio differs).
	Width, Height int
	Format        Format
	// Quality is the JPEG quality, 1–100 (ignored for PNG).
	Quality int
}

// Decoder decodes Jobs. Decode returns one result per Job.Want, in order; a nil entry means that
// picture could not be made (its frames do not decode), an error that the decoder could not run
// the Job at all (missing program, cancelled context). Implementations are safe for concurrent
// use and do not retain the Job.
type Decoder interface {
	// Decodes reports whether the decoder can decode c at all.
	Decodes(c codec.Codec) bool
	Decode(ctx context.Context, job *Job) ([][]byte, error)
	// String names the decoder and what it decodes, for logs ("ffmpeg 5.1.6 (/usr/bin/ffmpeg)").
	String() string
}

// Validate checks a Job before a decoder runs it.
func (j *Job) Validate() error {
	switch {
	case j.Codec != codec.H264 && j.Codec != codec.H265:
		return fmt.Errorf("decode: codec %v: want H.264 or H.265", j.Codec)
	case len(j.Frames) == 0 || !j.Frames[0].Start:
		return errors.New("decode: a job starts with the first frame of a run")
	case j.Width < 1 || j.Width > MaxWidth || j.Height < 1 || j.Height > MaxHeight:
		return fmt.Errorf("decode: image size %dx%d: want 1–%d by 1–%d", j.Width, j.Height, MaxWidth, MaxHeight)
	case j.Format != JPEG && j.Format != PNG:
		return fmt.Errorf("decode: %v: want JPEG or PNG", j.Format)
	case j.Format == JPEG && (j.Quality < 1 || j.Quality > 100):
		return fmt.Errorf("decode: JPEG quality %d: want 1–100", j.Quality)
	}
	for i, p := range j.Want {
		if p < 0 || p >= len(j.Frames) || (i > 0 && p <= j.Want[i-1]) {
			return fmt.Errorf("decode: Want %v: want ascending output positions below %d", j.Want, len(j.Frames))
		}
	}
	return nil
}

// runs returns the start index of each run of j and, last, len(j.Frames).
func (j *Job) runs() []int {
	var starts []int
	for i, f := range j.Frames {
		if i == 0 || f.Start {
			starts = append(starts, i)
		}
	}
	return append(starts, len(j.Frames))
}

// OutputFrames returns, for each output position, the index in j.Frames of the frame whose picture
// it is: within each run the frames sorted by PTS (stable, so equal PTS keep decode order).
func (j *Job) OutputFrames() []int {
	out := make([]int, 0, len(j.Frames))
	r := j.runs()
	for k := 0; k+1 < len(r); k++ {
		idx := make([]int, 0, r[k+1]-r[k])
		for i := r[k]; i < r[k+1]; i++ {
			idx = append(idx, i)
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			switch pa, pb := j.Frames[a].PTS, j.Frames[b].PTS; {
			case pa < pb:
				return -1
			case pa > pb:
				return 1
			}
			return 0
		})
		out = append(out, idx...)
	}
	return out
}

// parameterSets parses the Job's decoder configuration record.
func (j *Job) parameterSets() (codec.ParameterSets, error) {
	ps, err := codec.ParseConfig(j.Codec, j.CodecPrivate)
	if err != nil {
		return ps, fmt.Errorf("decode: codec private data: %w", err)
	}
	return ps, nil
}

var startCode = []byte{0, 0, 0, 1}

// appendParameterSets appends ps to b in Annex B form (VPS, SPS, PPS).
func appendParameterSets(b []byte, ps codec.ParameterSets) []byte {
	for _, set := range [][][]byte{ps.VPS, ps.SPS, ps.PPS} {
		for _, n := range set {
			b = append(b, startCode...)
			b = append(b, n...)
		}
	}
	return b
}

// appendFrame appends the length-prefixed frame f to b in Annex B form.
func appendFrame(b []byte, f []byte, lengthSize int) ([]byte, error) {
	n := len(b)
	err := codec.WalkAVCC(f, lengthSize, func(nalu []byte) error {
		b = append(b, startCode...)
		b = append(b, nalu...)
		return nil
	})
	if err != nil {
		return b[:n], err
	}
	return b, nil
}

// endOfSequence returns the end-of-sequence NAL unit of c (H.264 type 10, H.265 type 36) with its
// start code. Put between runs, it makes the next run's keyframe start a new coded video sequence
// (an H.265 CRA then decodes as after a splice) and makes the decoder output every picture it still
// holds, so runs never mix.
func endOfSequence(c codec.Codec) []byte {
	if c == codec.H265 {
		return []byte{0, 0, 0, 1, 36 << 1, 1}
	}
	return []byte{0, 0, 0, 1, 10}
}

// Chain is a Decoder that tries each of its decoders that decodes the Job's codec, in order: a
// later one runs when an earlier one fails the Job or leaves pictures out, and fills in only
// what is still missing.
type Chain []Decoder

// Decodes reports whether any decoder of the chain decodes c.
func (c Chain) Decodes(k codec.Codec) bool {
	for _, d := range c {
		if d != nil && d.Decodes(k) {
			return true
		}
	}
	return false
}

// Decode implements Decoder.
func (c Chain) Decode(ctx context.Context, job *Job) ([][]byte, error) {
	var out [][]byte
	var errs []error
	tried := false
	for _, d := range c {
		if d == nil || !d.Decodes(job.Codec) {
			continue
		}
		tried = true
		res, err := d.Decode(ctx, job)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		if out == nil {
			out = res
		} else {
			for i := range out {
				if out[i] == nil {
					out[i] = res[i]
				}
			}
		}
		if complete(out) {
			return out, nil
		}
	}
	if !tried {
		return nil, fmt.Errorf("decode: no decoder for %v", job.Codec)
	}
	if out == nil {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// complete reports whether every result is there.
func complete(res [][]byte) bool {
	for _, r := range res {
		if r == nil {
			return false
		}
	}
	return true
}

// String lists the chain's decoders.
func (c Chain) String() string {
	var names []string
	for _, d := range c {
		if d != nil {
			names = append(names, d.String())
		}
	}
	return strings.Join(names, ", then ")
}

// Split runs a Job on Small when it has fewer than Frames frames, else on Large (each falling back
// as a Chain does when given one). It is for a process-per-job decoder such as FFmpeg, whose start
// costs about as much as decoding a few 1080p keyframes in process: small jobs (one thumbnail)
// go to an in-process decoder, big ones to the faster decoder that pays its start once.
type Split struct {
	Small, Large Decoder
	Frames       int
}

// Decodes reports whether either side decodes c.
func (s Split) Decodes(c codec.Codec) bool { return s.Small.Decodes(c) || s.Large.Decodes(c) }

// Decode implements Decoder.
func (s Split) Decode(ctx context.Context, job *Job) ([][]byte, error) {
	if len(job.Frames) < s.Frames {
		return s.Small.Decode(ctx, job)
	}
	return s.Large.Decode(ctx, job)
}

func (s Split) String() string {
	return fmt.Sprintf("%s for jobs under %d frames, else %s", s.Small, s.Frames, s.Large)
}

// SplitFrames is the job size from which Combine prefers the program to the in-process decoder.
const SplitFrames = 10

// Combine puts kvs server's decoders together: inProcess (OpenH264: no start-up) for jobs under
// SplitFrames frames and program (ffmpeg: about 80 ms of CPU to start, then faster per frame) for
// bigger ones, each falling back on the other. Either may be nil; with neither, the empty Chain
// decodes nothing.
func Combine(inProcess, program Decoder) Decoder {
	switch {
	case inProcess != nil && program != nil:
		return Split{Small: Chain{inProcess, program}, Large: Chain{program, inProcess}, Frames: SplitFrames}
	case inProcess != nil:
		return Chain{inProcess}
	case program != nil:
		return Chain{program}
	}
	return Chain{}
}
