package fmp4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// ErrTracksChanged is returned by Writer.WriteFragment for a fragment whose tracks (codec,
// configuration record, picture size) differ from the first fragment's: one MP4 file has one
// sample description per track.
var ErrTracksChanged = errors.New("fmp4: tracks changed within one file")

// Writer writes one fragmented MP4 file to an io.Writer, one Matroska fragment at a time, as
// GetClip streams it: the init segment (ftyp + moov) before the first fragment, then one
// moof + mdat per fragment. Such a file is a regular MP4 that ffmpeg, browsers and other players
// read; it never holds more than one fragment in memory.
//
// Timeline: the first fragment's earliest frame is presented at 0. B-frame decode times start
// earlier than that, so every timestamp is shifted by the first fragment's reorder delay and each
// track gets an edit list that shifts presentation back. A fragment is placed at its start time
// (WriteFragment's start) minus the first fragment's, so gaps between fragments stay gaps; a
// fragment that starts no later than the previous one (the producer's clock went back) is placed
// right after the previous one instead.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	w      io.Writer
	ts     []track
	seq    uint32
	origin int64   // ns since the epoch of the first fragment's start
	lead   int64   // ns added to every timestamp
	prev   int64   // ns: start of the previous fragment on the output timeline
	end    int64   // ns: end of the previous fragment on the output timeline
	next   []int64 // per track: the earliest decode time (ticks) of the next fragment
	buf    []byte
	err    error
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFragment writes f (the init segment first, for the first fragment). start is the absolute
// time of f's cluster timecode (the KVS producer or server timestamp of the fragment); the zero
// Time means "the cluster timecode is the time since the Unix epoch". Errors: those of NewInit and
// AppendMediaSegment, ErrTracksChanged, and write errors, which are sticky. A fragment without
// frames is skipped.
func (w *Writer) WriteFragment(f *mkv.Fragment, start time.Time) error {
	if w.err != nil {
		return w.err
	}
	if len(f.Frames) == 0 {
		return nil
	}
	at, err := fragmentStart(f, start)
	if err != nil {
		return err
	}
	w.buf = w.buf[:0]
	if w.ts == nil {
		ts, err := layout(f.Tracks)
		if err != nil {
			return err
		}
		var firstPTS int64
		w.lead, firstPTS = leadTime(f)
		if w.buf, err = appendInit(w.buf, ts, firstPTS); err != nil {
			return err
		}
		w.ts, w.origin, w.next = ts, at, make([]int64, len(ts))
	} else {
		ts, err := layout(f.Tracks)
		if err != nil {
			return err
		}
		if !sameLayout(w.ts, ts) {
			return ErrTracksChanged
		}
	}
	pos := w.lead + (at - w.origin)
	if w.seq > 0 && pos <= w.prev {
		pos = w.end
	}
	w.seq++
	var segErr error
	w.buf, segErr = appendSegment(w.buf, w.seq, f, w.ts, pos, w.next)
	if segErr != nil {
		w.seq--
		if w.seq == 0 { // nothing written yet: the next fragment starts the file
			w.ts = nil
		}
		return segErr
	}
	w.prev = pos
	w.end = pos + fragmentDuration(f)
	_, err = w.w.Write(w.buf)
	if cap(w.buf) > maxKeptBuf {
		w.buf = nil // not held between fragments: a caller bounds the fragments in memory at once
	}
	if err != nil {
		w.err = fmt.Errorf("fmp4: write: %w", err)
		return w.err
	}
	return nil
}

// maxKeptBuf is the largest segment buffer a Writer keeps for the next fragment.
const maxKeptBuf = 1 << 20

func appendInit(b []byte, ts []track, lead int64) ([]byte, error) {
	init, err := buildInit(ts, lead)
	if err != nil {
		return b, err
	}
	return append(b, init...), nil
}

// fragmentStart returns the start of f in nanoseconds since the epoch.
func fragmentStart(f *mkv.Fragment, start time.Time) (int64, error) {
	if !start.IsZero() {
		return start.UnixNano(), nil
	}
	scale := int64(mkv.DefaultTimecodeScale)
	if f.TimecodeScale != 0 && f.TimecodeScale <= math.MaxInt64 {
		scale = int64(f.TimecodeScale)
	}
	ns, overflow := mulInt64(f.Timecode, scale)
	if overflow {
		return 0, fmt.Errorf("%w: cluster timecode %d", ErrTimeRange, f.Timecode)
	}
	return ns, nil
}

// fragmentDuration is f.Duration in nanoseconds.
func fragmentDuration(f *mkv.Fragment) int64 {
	scale := int64(mkv.DefaultTimecodeScale)
	if f.TimecodeScale != 0 && f.TimecodeScale <= math.MaxInt64 {
		scale = int64(f.TimecodeScale)
	}
	d, overflow := mulInt64(f.Duration(), scale)
	if overflow || d < 0 {
		return 0
	}
	return d
}

// leadTime returns how far f's timestamps must be shifted (ns) for every decode time to be
// non-negative when f's cluster timecode is placed at 0 (the video reorder delay, plus however
// far frames precede the cluster timecode), and where f's earliest frame is then presented.
func leadTime(f *mkv.Fragment) (lead, firstPTS int64) {
	scale := int64(mkv.DefaultTimecodeScale)
	if f.TimecodeScale != 0 && f.TimecodeScale <= math.MaxInt64 {
		scale = int64(f.TimecodeScale)
	}
	byTrack := map[uint64][]int64{}
	var minRel int64
	for i := range f.Frames {
		rel, overflow := subInt64(f.Frames[i].Timecode, f.Timecode)
		if overflow {
			return 0, 0
		}
		minRel = min(minRel, rel)
		byTrack[f.Frames[i].Track] = append(byTrack[f.Frames[i].Track], rel)
	}
	var ticks int64
	for _, rels := range byTrack {
		sorted := slices.Clone(rels)
		slices.Sort(sorted)
		for i := range rels {
			ticks = max(ticks, sorted[i]-rels[i]-minRel)
		}
	}
	ticks = max(ticks, -minRel)
	ns, overflow := mulInt64(ticks, scale)
	first, overflow2 := mulInt64(ticks+minRel, scale)
	if overflow || overflow2 {
		return 0, 0
	}
	return ns, first
}

func sameLayout(a, b []track) bool {
	return slices.EqualFunc(a, b, func(x, y track) bool {
		return x.number == y.number && x.entry == y.entry && x.timescale == y.timescale &&
			x.width == y.width && x.height == y.height && x.channels == y.channels &&
			bytes.Equal(x.config, y.config)
	})
}

// ErrCodecConfigChanged is the ErrTracksChanged of a fragment with the same tracks and codecs as
// the first but another configuration record or picture size (a resolution change).
var ErrCodecConfigChanged = fmt.Errorf("%w: codec configuration changed", ErrTracksChanged)

// CheckTracks reports whether a fragment with tracks next can follow one with tracks first in
// one file, as WriteFragment would: nil; ErrCodecConfigChanged; ErrTracksChanged (a track added or
// removed, or of another codec); or the error next's tracks give on their own (ErrUnsupportedCodec,
// ErrMissingCodecPrivate, ErrInvalidCodecPrivate, as a *TrackError).
func CheckTracks(first, next []mkv.Track) error {
	a, err := layout(first)
	if err != nil {
		return err
	}
	b, err := layout(next)
	if err != nil {
		return err
	}
	if sameLayout(a, b) {
		return nil
	}
	if slices.EqualFunc(a, b, func(x, y track) bool { return x.number == y.number && x.entry == y.entry }) {
		return ErrCodecConfigChanged
	}
	return ErrTracksChanged
}
