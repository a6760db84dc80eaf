package mkv

import (
	"bytes"
	"errors"
	"io"
	"math"

	"github.com/openkvs/kvs/mkv/codec"
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
// no fragment boundaries to attach them to.
//
// When an H.264 or H.265 track's parameter sets change (a camera reconfigured: another picture
// size, profile or bit rate) and nothing else does, the stream goes on under its first track
// headers: the fragment's parameter sets go in-band, before the NAL units of each of its
// keyframes, where decoders take them (ffmpeg decodes every frame across the change, mkvmerge
// reads the stream). When a fragment's DocType, TimecodeScale or tracks differ otherwise (set,
// codec, NAL unit length size, audio format), a new EBML header and Segment are started (Segments
// counts them). Players do not follow that: ffmpeg 5.1 reads the later Clusters with the first
// Segment's tracks (it stops at a track number it does not know and feeds H.265 to the H.264
// decoder), and mkvmerge reads the first Segment only. Such a part is read on its own.
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

	closed   bool
	segments int // Segments started (0: nothing written yet)
	docType  string
	scale    uint64
	tracks   []Track

	base  int64 // input ticks that map to output 0
	shift int64 // added after rebasing, grows on each restart
	// the previous fragment, in output ticks
	prevEnd  int64
	prevLast map[uint64]int64 // per track: last frame timecode

	frames []Frame
	// Tracks whose parameter sets changed in this Segment: from then on each of their keyframes
	// carries its fragment's sets in-band (also once they are back to the Segment's own: the
	// decoder holds the last it was given).
	inband  map[uint64]bool
	psCache map[uint64]paramSets
	data    []byte // keyframes with in-band parameter sets
}

// paramSets are a track's parameter sets as length-prefixed NAL units, for its CodecPrivate cp.
type paramSets struct{ cp, nalus []byte }

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
	first := s.segments == 0
	same := !first && SameTracks(s.tracks, f.Tracks)
	if !first && !same && docType == s.docType && scale == s.scale {
		same = s.inBand(f.Tracks)
	}
	if !same || docType != s.docType || scale != s.scale {
		clear(s.inband)
		if !first && scale != s.scale {
			// Keep the timeline continuous across segments with different scales.
			conv := func(v int64) int64 { return int64(math.Round(float64(v) * float64(s.scale) / float64(scale))) }
			s.base, s.shift, s.prevEnd = conv(s.base), conv(s.shift), conv(s.prevEnd)
			for k, v := range s.prevLast {
				s.prevLast[k] = conv(v)
			}
		}
		s.docType, s.scale = docType, scale
		s.segments++
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
	if first {
		s.base = start
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
	s.data = s.data[:0]
	for _, fr := range f.Frames {
		fr.Timecode += off
		if fr.Keyframe && s.inband[fr.Track] {
			start := len(s.data)
			s.data = append(append(s.data, s.paramSets(f.Tracks, fr.Track)...), fr.Data...)
			fr.Data = s.data[start:len(s.data):len(s.data)]
		}
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

// Segments returns how many Segments (EBML header, Info, Tracks) the writer has started: more
// than one when the tracks changed in a way that in-band parameter sets do not carry.
func (s *StreamWriter) Segments() int { return s.segments }

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

// inBand reports whether fragments with tracks can go on under the stream's track headers, with
// their parameter sets in-band: tracks differ from the stream's only in the parameter sets (and
// picture size) of H.264 or H.265 tracks whose NAL unit length size stays. It marks the tracks
// that differ in s.inband.
func (s *StreamWriter) inBand(tracks []Track) bool {
	if len(tracks) != len(s.tracks) {
		return false
	}
	var changed []uint64
	for i := range tracks {
		a, b := &s.tracks[i], &tracks[i]
		if SameTracks([]Track{*a}, []Track{*b}) {
			continue
		}
		c, ok := codec.FromCodecID(b.CodecID)
		if !ok || a.Number != b.Number || a.Type != b.Type || a.CodecID != b.CodecID {
			return false
		}
		was, err := codec.ParseConfig(c, a.CodecPrivate)
		if err != nil {
			return false
		}
		now, err := codec.ParseConfig(c, b.CodecPrivate)
		if err != nil || now.LengthSize != was.LengthSize {
			return false
		}
		changed = append(changed, b.Number)
	}
	if s.inband == nil {
		s.inband = map[uint64]bool{}
	}
	for _, n := range changed {
		s.inband[n] = true
	}
	return true
}

// paramSets returns the parameter sets of track number among tracks as length-prefixed NAL units
// (nil if its CodecPrivate does not parse: inBand checked those that differ from the Segment's).
func (s *StreamWriter) paramSets(tracks []Track, number uint64) []byte {
	var t *Track
	for i := range tracks {
		if tracks[i].Number == number {
			t = &tracks[i]
		}
	}
	if t == nil {
		return nil
	}
	if ps, ok := s.psCache[number]; ok && bytes.Equal(ps.cp, t.CodecPrivate) {
		return ps.nalus
	}
	c, _ := codec.FromCodecID(t.CodecID)
	cfg, err := codec.ParseConfig(c, t.CodecPrivate)
	if err != nil {
		return nil
	}
	var nalus []byte
	for _, set := range [][][]byte{cfg.VPS, cfg.SPS, cfg.PPS} {
		for _, n := range set {
			nalus = appendLengthPrefix(nalus, len(n), cfg.LengthSize)
			nalus = append(nalus, n...)
		}
	}
	if s.psCache == nil {
		s.psCache = map[uint64]paramSets{}
	}
	s.psCache[number] = paramSets{cp: bytes.Clone(t.CodecPrivate), nalus: nalus}
	return nalus
}

// appendLengthPrefix appends n as a big-endian NAL unit length of size bytes.
func appendLengthPrefix(b []byte, n, size int) []byte {
	for i := size - 1; i >= 0; i-- {
		b = append(b, byte(n>>(8*i)))
	}
	return b
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
