package mkv

import (
	"bytes"
	"errors"
	"io"
	"math"
)

// ErrClosed is returned by StreamWriter.WriteFragment after Close.
var ErrClosed = errors.New("mkv: stream writer closed")

// StreamWriter writes fragments as one continuous Matroska stream for players (ffplay, ffprobe,
// mkvmerge, VLC): an EBML header, an unknown-size Segment, Info and Tracks once, then one
// known-size Cluster per fragment. Unlike concatenated GetMedia chunks, this form plays
// everywhere, from a pipe too.
//
// KVS tags are not written. Players would accept them (ffmpeg 5.1 and mkvmerge 74 read Tags
// between Clusters without a warning), but they have no use for them, and a player stream has
// no fragment boundaries to attach them to. When a fragment's DocType, TimecodeScale or tracks (set, codec, codec private,
// picture size, audio format) differ from the previous one's, a new EBML header and Segment are
// started.
//
// Timecodes are rebased so that the first fragment starts at 0 (players dislike epoch-ms starts);
// later fragments keep their offset from the first. A fragment that would go backwards or overlap
// the previous one on some track (a producer restart) is moved to start where the previous
// fragment ended.
//
// Each WriteFragment makes exactly one Write to w. A StreamWriter is not safe for concurrent use.
type StreamWriter struct {
	w   io.Writer
	buf []byte
	err error

	closed  bool
	started bool
	docType string
	scale   uint64
	tracks  []Track

	base  int64 // input ticks that map to output 0
	shift int64 // added after rebasing, grows on each restart
	// the previous fragment, in output ticks
	prevEnd  int64
	prevLast map[uint64]int64 // per track: last frame timecode

	frames []Frame
}

// NewStreamWriter returns a StreamWriter writing to w. It does not close w.
func NewStreamWriter(w io.Writer) *StreamWriter {
	return &StreamWriter{w: w, prevLast: make(map[uint64]int64)}
}

// WriteFragment writes f as one Cluster, preceded by a new stream header when needed, in a single
// Write. Write errors are sticky. f is not modified or retained.
func (s *StreamWriter) WriteFragment(f *Fragment) error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}
	docType := f.DocType
	if docType == "" {
		docType = "matroska"
	}
	scale := f.TimecodeScale
	if scale == 0 {
		scale = DefaultTimecodeScale
	}
	s.buf = s.buf[:0]
	if !s.started || docType != s.docType || scale != s.scale || !SameTracks(s.tracks, f.Tracks) {
		if s.started && scale != s.scale {
			// Keep the timeline continuous across segments with different scales.
			conv := func(v int64) int64 { return int64(math.Round(float64(v) * float64(s.scale) / float64(scale))) }
			s.base, s.shift, s.prevEnd = conv(s.base), conv(s.shift), conv(s.prevEnd)
			for k, v := range s.prevLast {
				s.prevLast[k] = conv(v)
			}
		}
		s.docType, s.scale = docType, scale
		s.tracks = cloneTracks(f.Tracks)
		s.buf = AppendEBMLHeader(s.buf, docType)
		s.buf = AppendSegmentStart(s.buf)
		s.buf = AppendInfo(s.buf, scale, "")
		s.buf = AppendTracks(s.buf, f.Tracks)
	}

	start := f.Timecode // of the fragment's earliest frame
	if len(f.Frames) > 0 {
		start = f.Frames[0].Timecode
		for i := range f.Frames {
			start = min(start, f.Frames[i].Timecode)
		}
	}
	if !s.started {
		s.base = start
		s.started = true
	} else {
		out := start - s.base + s.shift
		backwards := out < 0
		for i := range f.Frames {
			if last, ok := s.prevLast[f.Frames[i].Track]; ok && f.Frames[i].Timecode-s.base+s.shift <= last {
				backwards = true
				break
			}
		}
		if backwards {
			s.shift += s.prevEnd - out
		}
	}
	off := s.shift - s.base

	s.frames = s.frames[:0]
	for _, fr := range f.Frames {
		fr.Timecode += off
		s.frames = append(s.frames, fr)
	}
	var err error
	s.buf, err = appendClusters(s.buf, f.Timecode+off, s.frames)
	if err != nil {
		return err
	}
	if len(s.frames) > 0 {
		clear(s.prevLast)
		for _, fr := range s.frames {
			if last, ok := s.prevLast[fr.Track]; !ok || fr.Timecode > last {
				s.prevLast[fr.Track] = fr.Timecode
			}
		}
		tmp := Fragment{TimecodeScale: scale, Tracks: f.Tracks, Frames: s.frames}
		s.prevEnd = start + off + tmp.Duration()
	}
	if _, err := s.w.Write(s.buf); err != nil {
		s.err = err
		return err
	}
	return nil
}

// appendClusters writes frames as one Cluster at timecode when they fit its int16 range, else
// as several Clusters each starting at its first frame's timecode.
func appendClusters(b []byte, timecode int64, frames []Frame) ([]byte, error) {
	if timecode < 0 && len(frames) > 0 {
		timecode = frames[0].Timecode
	}
	if out, err := AppendCluster(b, max(timecode, 0), frames); err == nil {
		return out, nil
	}
	for i := 0; i < len(frames); {
		lo, hi := frames[i].Timecode, frames[i].Timecode
		j := i + 1
		for j < len(frames) {
			t := frames[j].Timecode
			if max(hi, t)-min(lo, t) > math.MaxInt16 {
				break
			}
			lo, hi = min(lo, t), max(hi, t)
			j++
		}
		var err error
		if b, err = AppendCluster(b, lo, frames[i:j]); err != nil {
			return b, err
		}
		i = j
	}
	return b, nil
}

// Close ends the stream. The unknown-size Segment needs no trailer, so nothing is written; w is
// not closed. It returns the sticky write error, if any.
func (s *StreamWriter) Close() error {
	s.closed = true
	return s.err
}

func cloneTracks(tracks []Track) []Track {
	out := make([]Track, len(tracks))
	copy(out, tracks)
	for i := range out {
		out[i].CodecPrivate = bytes.Clone(out[i].CodecPrivate)
	}
	return out
}

// SameTracks reports whether a player can go on decoding b's frames with a's track headers: the
// same tracks, codecs, codec private data and picture or audio format.
func SameTracks(a, b []Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Number != y.Number || x.Type != y.Type || x.CodecID != y.CodecID ||
			!bytes.Equal(x.CodecPrivate, y.CodecPrivate) || x.Width != y.Width || x.Height != y.Height ||
			x.SamplingRate != y.SamplingRate || x.Channels != y.Channels || x.BitDepth != y.BitDepth {
			return false
		}
	}
	return true
}
