package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// MKVSource reads frames from a Matroska or WebM stream, including the concatenated documents
// GetMedia returns, with tracks carried as they are (H.264, H.265, VP8, VP9, AAC, Opus...).
// Timestamps are the stream's own: PTS is the block timecode scaled by TimecodeScale.
type MKVSource struct {
	r *mkv.Reader
	input
	opts    Options
	tracks  []mkv.Track
	scale   uint64                // ns per tick
	nal     map[uint64]trackCodec // H.264/H.265 tracks by number
	lastDTS map[uint64]time.Duration

	// Concatenated documents (`cat a.mkv b.mkv`) whose timestamps start again: each later one is
	// moved to go on after the one before (as mkvmerge appends), by shift.
	shift   time.Duration
	maxPTS  time.Duration // the largest PTS given so far (shift included)
	lastPTS time.Duration // of the frame before, for the frame interval
	step    time.Duration // the smallest positive PTS step seen: the frame interval
	newDoc  bool          // a Tracks element was read since the last frame
	started bool          // a frame was given
}

type trackCodec struct {
	codec      codec.Codec
	lengthSize int
}

// NewMKVSource reads r up to its Tracks element and returns a Source over it. closer, if not nil,
// is closed by Close and when ctx of a blocked call is done.
func NewMKVSource(ctx context.Context, r io.Reader, closer io.Closer, opts Options) (*MKVSource, error) {
	s := &MKVSource{
		r:       mkv.NewReader(r),
		input:   input{closer},
		opts:    opts,
		scale:   mkv.DefaultTimecodeScale,
		nal:     map[uint64]trackCodec{},
		lastDTS: map[uint64]time.Duration{},
	}
	defer context.AfterFunc(ctx, s.closeInput)()
	for s.tracks == nil {
		ev, err := s.r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("matroska: reading up to Tracks: %w", err)
		}
		switch ev.Kind {
		case mkv.EventInfo:
			s.scale = ev.TimecodeScale
		case mkv.EventTracks:
			if err := s.setTracks(ev.Tracks); err != nil {
				return nil, err
			}
		case mkv.EventFrame:
			return nil, fmt.Errorf("matroska: frame at offset %d before any Tracks element", ev.Offset)
		}
	}
	return s, nil
}

func (s *MKVSource) setTracks(tracks []mkv.Track) error {
	if len(tracks) == 0 {
		return fmt.Errorf("matroska: %w: empty Tracks element", ErrNoTracks)
	}
	s.tracks = make([]mkv.Track, len(tracks))
	for i, t := range tracks {
		t.CodecPrivate = cloneBytes(t.CodecPrivate)
		if c, ok := codec.FromCodecID(t.CodecID); ok {
			ps, err := codec.ParseConfig(c, t.CodecPrivate)
			if err != nil {
				return fmt.Errorf("matroska: track %d (%s) CodecPrivate: %w", t.Number, t.CodecID, err)
			}
			s.nal[t.Number] = trackCodec{codec: c, lengthSize: ps.LengthSize}
			if ps.LengthSize != 4 {
				// Frames are rewritten with 4-byte lengths; the record must say so.
				if t.CodecPrivate, err = rebuildConfig(c, ps); err != nil {
					return fmt.Errorf("matroska: track %d: %w", t.Number, err)
				}
			}
			if t.Width == 0 || t.Height == 0 {
				if info, err := codec.ParseSPS(c, ps.SPS[0]); err == nil {
					t.Width, t.Height = uint32(info.Width), uint32(info.Height)
				}
			}
		}
		s.tracks[i] = t
	}
	return nil
}

// rebuildConfig returns a decoder configuration record for ps with 4-byte NAL unit lengths.
func rebuildConfig(c codec.Codec, ps codec.ParameterSets) ([]byte, error) {
	if c == codec.H265 {
		return codec.BuildHEVCConfig(ps.VPS, ps.SPS, ps.PPS)
	}
	return codec.BuildAVCConfig(ps.SPS, ps.PPS)
}

// trackChange tells how a repeated Tracks element (one per concatenated document) differs from
// the tracks known: same, not at all; newParamSets, only in the parameter sets of H.264/H.265
// tracks (a camera's new picture size); neither, otherwise.
func (s *MKVSource) trackChange(tracks []mkv.Track) (same, newParamSets bool) {
	if len(tracks) != len(s.tracks) {
		return false, false
	}
	same = true
	for i, t := range tracks {
		o := s.tracks[i]
		tc, nal := s.nal[t.Number]
		switch {
		case t.Number != o.Number || t.CodecID != o.CodecID, !nal && !bytes.Equal(t.CodecPrivate, o.CodecPrivate):
			return false, false
		case nal && !sameParamSets(tc.codec, t.CodecPrivate, o.CodecPrivate):
			same = false
		}
	}
	return same, !same
}

// sameParamSets reports whether two avcC/hvcC records carry the same parameter sets (their NAL
// unit length sizes may differ: s.tracks holds records rebuilt with 4-byte lengths).
func sameParamSets(c codec.Codec, a, b []byte) bool {
	pa, errA := codec.ParseConfig(c, a)
	pb, errB := codec.ParseConfig(c, b)
	if errA != nil || errB != nil {
		return bytes.Equal(a, b)
	}
	eq := func(x, y [][]byte) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !bytes.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return eq(pa.VPS, pb.VPS) && eq(pa.SPS, pb.SPS) && eq(pa.PPS, pb.PPS)
}

// Tracks returns the tracks of the first Tracks element.
func (s *MKVSource) Tracks() []mkv.Track { return s.tracks }

// ReadFrame returns the next frame. Frames of tracks not listed in Tracks are an error, as is a
// later Tracks element that changes the tracks (players drop frames there too).
func (s *MKVSource) ReadFrame(ctx context.Context) (Frame, error) { return s.read(ctx, false) }

// readLent implements lender: the frame's Data may be the Reader's buffer, valid until the next
// read.
func (s *MKVSource) readLent(ctx context.Context) (Frame, error) { return s.read(ctx, true) }

func (s *MKVSource) read(ctx context.Context, lend bool) (Frame, error) {
	defer context.AfterFunc(ctx, s.closeInput)()
	for {
		ev, err := s.r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return Frame{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return Frame{}, io.EOF
			}
			return Frame{}, fmt.Errorf("matroska: %w", err)
		}
		switch ev.Kind {
		case mkv.EventInfo:
			s.scale = ev.TimecodeScale
		case mkv.EventTracks:
			s.newDoc = true
			switch same, newParamSets := s.trackChange(ev.Tracks); {
			case newParamSets: // go on with them
				if err := s.setTracks(ev.Tracks); err != nil {
					return Frame{}, err
				}
				return Frame{}, ErrDiscontinuity
			case !same:
				return Frame{}, fmt.Errorf("matroska: tracks change at offset %d; a stream must keep its tracks (split the input there)", ev.Offset)
			}
		case mkv.EventFrame:
			return s.frame(&ev.Frame, ev.Offset, lend)
		}
	}
}

func (s *MKVSource) frame(f *mkv.Frame, offset int64, lend bool) (Frame, error) {
	own := cloneBytes
	if lend {
		own = func(b []byte) []byte { return b }
	}
	known := false
	for i := range s.tracks {
		if s.tracks[i].Number == f.Track {
			known = true
			break
		}
	}
	if !known {
		return Frame{}, fmt.Errorf("matroska: block at offset %d for track %d, which Tracks does not declare", offset, f.Track)
	}
	pts := time.Duration(f.Timecode)*time.Duration(s.scale) + s.shift
	if s.newDoc && s.started && pts <= s.maxPTS-s.step {
		// A document whose timestamps start again: it goes on one frame after the last one.
		d := s.maxPTS + max(s.step, time.Millisecond) - pts
		s.shift += d
		pts += d
		s.opts.notice("matroska: the timestamps start again at offset %d (concatenated files?); the frames from there on follow the ones before", offset)
	}
	s.newDoc = false
	if d := pts - s.lastPTS; s.started && d > 0 && (s.step == 0 || d < s.step) {
		s.step = d
	}
	s.started, s.lastPTS, s.maxPTS = true, pts, max(s.maxPTS, pts)
	out := Frame{Track: f.Track, PTS: pts, Keyframe: f.Keyframe, DiscardPadding: f.DiscardPadding}
	if dts, ok := s.lastDTS[f.Track]; ok && dts > pts {
		out.DTS = dts
	} else {
		out.DTS = pts
	}
	s.lastDTS[f.Track] = out.DTS
	if tc, ok := s.nal[f.Track]; ok {
		var err error
		if tc.lengthSize == 4 {
			out.Data = own(f.Data)
		} else if out.Data, err = codec.ConvertLengthSize(nil, f.Data, tc.lengthSize); err != nil {
			return Frame{}, fmt.Errorf("matroska: block at offset %d, track %d: %w", offset, f.Track, err)
		}
		out.Keyframe = codec.IsKeyframeAVCC(tc.codec, out.Data)
	} else {
		out.Data = own(f.Data)
	}
	return out, nil
}
