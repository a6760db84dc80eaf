package capture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// MaxAccessUnitSize caps one access unit of an Annex B stream, in bytes; a longer one is an error
// (the input is most likely not Annex B).
const MaxAccessUnitSize = 16 << 20

// auSplitter cuts an Annex B byte stream into access units, each returned as 4-byte length-prefixed
// NAL units. A new access unit begins, once the current one holds a slice, at an access unit
// delimiter, a parameter set, a prefix SEI or the first slice of a new picture (first_mb_in_slice
// == 0 for H.264, first_slice_segment_in_pic_flag for H.265).
type auSplitter struct {
	nalus *codec.AnnexBScanner
	codec codec.Codec

	au     []byte // the access unit being built (length-prefixed)
	hasVCL bool
}

func newAUSplitter(r io.Reader, c codec.Codec) *auSplitter {
	return &auSplitter{nalus: codec.NewAnnexBScanner(r, MaxAccessUnitSize), codec: c}
}

// next returns the next access unit as length-prefixed NAL units (owned by the caller), or
// io.EOF after the last one.
func (s *auSplitter) next() ([]byte, error) {
	for {
		nalu, err := s.nalus.Next()
		if errors.Is(err, io.EOF) {
			if len(s.au) == 0 {
				return nil, io.EOF
			}
			au := s.au
			s.au, s.hasVCL = nil, false
			return au, nil
		}
		if err != nil {
			return nil, fmt.Errorf("annex b: %w", err)
		}
		var done []byte
		if s.hasVCL && codec.StartsAccessUnit(s.codec, nalu) {
			done = s.au
			s.au, s.hasVCL = nil, false
		}
		if len(s.au)+len(nalu) > MaxAccessUnitSize {
			return nil, fmt.Errorf("annex b: access unit larger than %d bytes", MaxAccessUnitSize)
		}
		s.au = codec.AppendLengthPrefixed(s.au, nalu)
		if codec.IsVCL(s.codec, nalu) {
			s.hasVCL = true
		}
		if done != nil {
			return done, nil
		}
	}
}

// DetectCodec tells H.264 from H.265 by the first NAL unit of the Annex B data b that is a
// sequence parameter set in either syntax (H.264: nal_unit_type 7; H.265: type 33 with
// nuh_layer_id 0 and TemporalId 0). ok is false when b holds no such NAL unit.
func DetectCodec(b []byte) (c codec.Codec, ok bool) {
	err := codec.WalkAnnexB(b, func(n []byte) error {
		switch {
		case len(n) >= 2 && n[0] == 0x42 && n[1] == 0x01:
			c = codec.H265
		case len(n) >= 1 && n[0]&0x80 == 0 && n[0]&0x1F == codec.H264NALUSPS:
			c = codec.H264
		default:
			return nil
		}
		return io.EOF // found
	})
	return c, errors.Is(err, io.EOF)
}

// AnnexBSource reads a raw H.264 or H.265 Annex B byte stream (a .h264/.h265 file, or stdin).
//
// Raw Annex B carries no timestamps and no reordering information: frames are stamped PTS = DTS =
// n / frame rate in arrival order, which is right for streams without B-frames. Streams with
// B-frames play, but each picture is presented in decode order; mux them into Matroska or MP4
// first to keep their timing. Access units before the first keyframe are dropped (a decoder cannot
// start there); parameter sets and other NAL units are kept in the frames as they are.
type AnnexBSource struct {
	split *auSplitter
	codec codec.Codec
	input
	track    mkv.Track
	frameDur float64 // nanoseconds per frame
	n        int64
	pending  [][]byte  // access units read while looking for the parameter sets
	ps       [3][]byte // VPS, SPS, PPS of the current track
}

// paramSets returns the VPS, SPS and PPS in the access unit au (nil for those it lacks).
func paramSets(c codec.Codec, au []byte) (ps [3][]byte) {
	_ = codec.WalkAVCC(au, 4, func(n []byte) error {
		switch t := codec.NALUType(c, n); {
		case c == codec.H264 && t == codec.H264NALUSPS, c == codec.H265 && t == codec.H265NALUSPS:
			ps[1] = n
		case c == codec.H264 && t == codec.H264NALUPPS, c == codec.H265 && t == codec.H265NALUPPS:
			ps[2] = n
		case c == codec.H265 && t == codec.H265NALUVPS:
			ps[0] = n
		}
		return nil
	})
	return ps
}

// skipToStartCode discards what br holds before its first start code, which a byte stream joined
// inside a NAL unit starts with, and returns how many bytes that was (0 when they were all zero
// bytes, which the scanner takes). It reads at most MaxAccessUnitSize bytes looking for it; an
// input that ends before one is left to the scanner to refuse.
func skipToStartCode(br *bufio.Reader) (int, error) {
	skipped, junk := 0, false
	for {
		if _, err := br.Peek(3); err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return skippedJunk(skipped, junk), err
		}
		b, _ := br.Peek(br.Buffered())
		n := bytes.Index(b, []byte{0, 0, 1})
		found := n >= 0
		if !found {
			n = len(b) - 2 // a start code may begin in the last two bytes
		}
		if skipped += n; skipped > MaxAccessUnitSize {
			return skipped, fmt.Errorf("no start code in the first %d bytes: the input is not an H.264/H.265 byte stream", MaxAccessUnitSize)
		}
		junk = junk || slices.ContainsFunc(b[:n], func(c byte) bool { return c != 0 })
		if _, err := br.Discard(n); err != nil {
			return skippedJunk(skipped, junk), err
		}
		if found {
			return skippedJunk(skipped, junk), nil
		}
	}
}

func skippedJunk(n int, junk bool) int {
	if !junk {
		return 0
	}
	return n
}

// NewAnnexBSource reads r up to its first keyframe with parameter sets and returns a Source over
// it. The codec is opts.Codec, else detected from the first SPS; the frame rate is opts.FrameRate,
// else the SPS VUI timing info's, else it fails with ErrNeedFrameRate. closer, if not nil, is
// closed by Close and when ctx of a blocked call is done.
func NewAnnexBSource(ctx context.Context, r io.Reader, closer io.Closer, opts Options) (*AnnexBSource, error) {
	s := &AnnexBSource{input: input{closer}}
	defer context.AfterFunc(ctx, s.closeInput)()
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	r = br
	if n, err := skipToStartCode(br); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("annex b: %w", err)
	} else if n > 0 {
		opts.notice("annex b: dropped %d bytes before the first start code (the input starts inside a NAL unit)", n)
	}
	c := opts.Codec
	if c == 0 {
		// Peek far enough to find the first SPS; streams put it within the first few hundred bytes.
		var head []byte
		if p, ok := r.(interface{ Peek(int) ([]byte, error) }); ok {
			head, _ = p.Peek(64 << 10)
		}
		var ok bool
		if c, ok = DetectCodec(head); !ok {
			return nil, errors.New("annex b: cannot tell H.264 from H.265 (no SPS in the first 64 KiB): pass the codec (--codec h264|h265) or use a .h264/.h265 file name")
		}
	}
	s.split = newAUSplitter(r, c)
	s.codec = c

	var ps [3][]byte // VPS, SPS, PPS
	dropped := 0
	for {
		au, err := s.split.next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("annex b %v: no keyframe with parameter sets in the stream (%d access units)", c, dropped)
			}
			return nil, err
		}
		for i, n := range paramSets(c, au) {
			if n != nil {
				ps[i] = cloneBytes(n)
			}
		}
		if ps[1] != nil && ps[2] != nil && (c == codec.H264 || ps[0] != nil) && codec.IsKeyframeAVCC(c, au) {
			s.pending = append(s.pending, au)
			break
		}
		dropped++
	}
	if dropped > 0 {
		opts.notice("annex b: dropped %d access units before the first keyframe", dropped)
	}

	track, info, err := videoTrack(c, ps[0], ps[1], ps[2])
	if err != nil {
		return nil, fmt.Errorf("annex b: %w", err)
	}
	fps, ok := info.FrameRate()
	ok = ok && fps <= 1000 && fps >= 0.01
	switch given := opts.FrameRate; {
	case given > 0 && !math.IsInf(given, 0):
		// The frame rate given wins: an SPS's timing info can be wrong (half the rate, from
		// encoders that leave out the two fields per frame of H.264's formula).
		if ok && math.Abs(fps-given) > given/1000 {
			opts.notice("annex b: frame rate %g as given, not the %g of the SPS timing info", given, fps)
		}
		fps = given
	case !ok:
		return nil, fmt.Errorf("annex b: %w", ErrNeedFrameRate)
	}
	s.frameDur = float64(time.Second) / fps
	track.DefaultDuration = time.Duration(math.Round(s.frameDur))
	s.track = track
	s.ps = ps
	return s, nil
}

// Tracks returns the single video track (number 1).
func (s *AnnexBSource) Tracks() []mkv.Track { return []mkv.Track{s.track} }

// ReadFrame returns the next access unit.
func (s *AnnexBSource) ReadFrame(ctx context.Context) (Frame, error) {
	var au []byte
	fresh := len(s.pending) == 0 // pending ones were looked at when read
	if !fresh {
		au, s.pending = s.pending[0], s.pending[1:]
	} else {
		stop := context.AfterFunc(ctx, s.closeInput)
		var err error
		au, err = s.split.next()
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return Frame{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return Frame{}, io.EOF
			}
			return Frame{}, err
		}
	}
	key := codec.IsKeyframeAVCC(s.codec, au)
	if fresh && key && s.newParameterSets(au) {
		s.pending = append(s.pending, au) // the first frame of the new track
		return Frame{}, ErrDiscontinuity
	}
	t := time.Duration(math.Round(float64(s.n) * s.frameDur))
	s.n++
	return Frame{Track: 1, PTS: t, DTS: t, Keyframe: key, Data: au}, nil
}

// newParameterSets reports whether keyframe au carries parameter sets other than the track's (a
// camera reconfigured: a new picture size); the track is then theirs, so that the frames after
// them do not go out under the old CodecPrivate.
func (s *AnnexBSource) newParameterSets(au []byte) bool {
	ps, changed := paramSets(s.codec, au), false
	for i := range ps {
		if ps[i] == nil {
			ps[i] = s.ps[i]
		} else if !bytes.Equal(ps[i], s.ps[i]) {
			changed = true
		}
	}
	if !changed {
		return false
	}
	track, _, err := videoTrack(s.codec, ps[0], ps[1], ps[2])
	if err != nil {
		return false
	}
	track.DefaultDuration = s.track.DefaultDuration
	s.track = track
	for i := range ps {
		s.ps[i] = cloneBytes(ps[i])
	}
	return true
}
