package fmp4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// Errors of AppendMediaSegment besides the *TrackError ones.
var (
	// ErrEmptyFragment: the fragment has no frames; a media segment needs at least one sample.
	ErrEmptyFragment = errors.New("fmp4: fragment has no frames")
	// ErrUnknownTrack: a frame belongs to a track the fragment's Tracks do not list.
	ErrUnknownTrack = errors.New("fmp4: frame of an unknown track")
	// ErrTimeRange: a timestamp falls before the start of the output timeline or beyond what MP4
	// fields hold (a sample duration over 2^32 ticks, a composition offset over 2^31, a decode time
	// over 2^63).
	ErrTimeRange = errors.New("fmp4: timestamp out of range")
	// ErrFrameTooLarge: a frame or a whole fragment exceeds the 4 GiB a 32-bit box size allows.
	ErrFrameTooLarge = errors.New("fmp4: frame too large")
)

// ISO/IEC 14496-12 sample flags: a sync sample "depends on no other sample"; other samples
// "depend on others" and are non-sync.
const (
	flagsSync    = 0x02000000
	flagsNonSync = 0x01010000
)

// sample is one frame placed on the output timeline, in track timescale units.
type sample struct {
	frame    int   // index into the fragment's Frames
	pts      int64 // presentation time
	dts      int64 // decode time
	duration int64
}

// AppendMediaSegment appends one media segment (moof + mdat) holding every frame of f to dst and
// returns the extended slice; on error dst is returned unchanged. seq is the moof's
// sequence_number (players only need it to increase). The tracks are f.Tracks, mapped as NewInit
// maps them, so the segment plays after NewInit(f.Tracks).
//
// start places f on the output timeline: f's cluster timecode (f.Timecode) becomes presentation
// time start, and every frame keeps its offset from it. Callers make timelines continuous by
// passing, for each fragment, its start time relative to one origin (the HLS handler uses the
// producer timestamp since the Unix epoch; Writer the offset from the clip's first fragment).
//
// Timing, per track:
//   - Matroska stores presentation times. Decode times are those times sorted (the n-th frame
//     in decode order is decoded at the n-th smallest presentation time), moved earlier by the
//     fragment's reorder delay (the largest amount any frame's presentation would otherwise
//     precede its decode time), so that composition offsets (pts − dts) are never negative and
//     the trun stays version 0. Audio has no reordering: its decode time is its timestamp.
//   - The baseMediaDecodeTime (tfdt, version 1) is the first decode time. Decode times that
//     would fall before 0 (start under the reorder delay, a few frames) are moved to 0, 1, 2…
//     ticks instead, never past their presentation time.
//   - A sample lasts until the next one's decode time; the last lasts its BlockDuration, else the
//     track's DefaultDuration, else the mean spacing of the track's frames in f, else 1024 samples
//     for AAC and 1/30 s for video.
//   - Sync-sample flags come from the Matroska keyframe flags for video; audio frames are all
//     sync samples.
//
// The frame data is copied unchanged (length-prefixed NAL units with the length size the avcC or
// hvcC declares; raw AAC frames). AppendMediaSegment does not retain f or dst.
func AppendMediaSegment(dst []byte, seq uint32, f *mkv.Fragment, start time.Duration) ([]byte, error) {
	ts, err := layout(f.Tracks)
	if err != nil {
		return dst, err
	}
	return appendSegment(dst, seq, f, ts, int64(start), nil)
}

// appendSegment is AppendMediaSegment with the tracks laid out. next, when not nil, holds per
// track the earliest decode time (ticks) the segment's first video sample may take, so that decode
// times keep increasing across the segments of one file; on success it is advanced past the
// segment's last decode time.
func appendSegment(dst []byte, seq uint32, f *mkv.Fragment, ts []track, start int64, next []int64) ([]byte, error) {
	if len(f.Frames) == 0 {
		return dst, ErrEmptyFragment
	}
	perTrack, err := placeSamples(f, ts, start, next)
	if err != nil {
		return dst, err
	}
	var dataSize uint64
	for i := range f.Frames {
		dataSize += uint64(len(f.Frames[i].Data))
	}
	if dataSize > math.MaxUint32-16 {
		return dst, fmt.Errorf("%w: %d bytes of frames in one fragment", ErrFrameTooLarge, dataSize)
	}

	b, moof := appendMoofStart(dst, seq)

	type patch struct{ at, rel int }
	var patches []patch
	var dataOffset int // within mdat payload
	for k, smp := range perTrack {
		if len(smp) == 0 {
			continue
		}
		t := &ts[k]
		var traf int
		b, traf = appendTrafStart(b, t.id, smp[0].dts)

		ctts := false
		for _, s := range smp {
			ctts = ctts || s.pts != s.dts
		}
		flags := uint32(0x000001 | 0x000100 | 0x000200 | 0x000400) // data offset, duration, size, flags
		if ctts {
			flags |= 0x000800
		}
		trun := len(b)
		b = fullBoxStart(b, "trun", 0, flags)
		b = binary.BigEndian.AppendUint32(b, uint32(len(smp)))
		patches = append(patches, patch{at: len(b), rel: dataOffset})
		b = binary.BigEndian.AppendUint32(b, 0) // data_offset, patched below
		for _, s := range smp {
			fr := &f.Frames[s.frame]
			b = binary.BigEndian.AppendUint32(b, uint32(s.duration))
			b = binary.BigEndian.AppendUint32(b, uint32(len(fr.Data)))
			sf := uint32(flagsSync)
			if t.video && !fr.Keyframe {
				sf = flagsNonSync
			}
			b = binary.BigEndian.AppendUint32(b, sf)
			if ctts {
				b = binary.BigEndian.AppendUint32(b, uint32(s.pts-s.dts))
			}
			dataOffset += len(fr.Data)
		}
		b = boxEnd(b, trun)
		b = boxEnd(b, traf)
	}
	b = boxEnd(b, moof)
	moofSize := len(b) - moof
	for _, p := range patches {
		binary.BigEndian.PutUint32(b[p.at:], uint32(moofSize+8+p.rel))
	}

	b = binary.BigEndian.AppendUint32(b, uint32(8+dataSize))
	b = append(b, "mdat"...)
	b = slices.Grow(b, int(dataSize))
	for _, smp := range perTrack {
		for _, s := range smp {
			b = append(b, f.Frames[s.frame].Data...)
		}
	}
	if next != nil {
		for k, smp := range perTrack {
			if len(smp) > 0 {
				next[k] = smp[len(smp)-1].dts + 1
			}
		}
	}
	return b, nil
}

// appendEmptySegment appends a media segment of track t without samples: a moof whose track
// fragment has only its decode time (start, ns on the timeline, 0 at the least; a track fragment
// may hold no trun, ISO/IEC 14496-12 8.8.6), and an empty mdat.
func appendEmptySegment(dst []byte, seq uint32, t *track, start int64) ([]byte, error) {
	dts, err := toTicks(max(start, 0), t.timescale)
	if err != nil {
		return dst, err
	}
	b, moof := appendMoofStart(dst, seq)
	b, traf := appendTrafStart(b, t.id, dts)
	b = boxEnd(b, traf)
	b = boxEnd(b, moof)
	b = binary.BigEndian.AppendUint32(b, 8)
	return append(b, "mdat"...), nil
}

// appendMoofStart appends the start of a moof and its mfhd (sequence number seq); moof is where
// it starts, for boxEnd.
func appendMoofStart(b []byte, seq uint32) (_ []byte, moof int) {
	moof = len(b)
	b = boxStart(b, "moof")
	b = fullBoxStart(b, "mfhd", 0, 0)
	b = binary.BigEndian.AppendUint32(b, seq)
	return boxEnd(b, len(b)-16), moof
}

// appendTrafStart appends the start of a traf with its tfhd (track id; default-base-is-moof, so
// data offsets count from the moof's first byte) and tfdt (base decode time dts); traf is where
// it starts, for boxEnd.
func appendTrafStart(b []byte, id uint32, dts int64) (_ []byte, traf int) {
	traf = len(b)
	b = boxStart(b, "traf")
	b = fullBoxStart(b, "tfhd", 0, 0x020000)
	b = binary.BigEndian.AppendUint32(b, id)
	b = boxEnd(b, len(b)-16)
	b = fullBoxStart(b, "tfdt", 1, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(dts))
	return boxEnd(b, len(b)-20), traf
}

// placeSamples puts each track's frames on the output timeline (see AppendMediaSegment). next (may
// be nil) is appendSegment's.
func placeSamples(f *mkv.Fragment, ts []track, start int64, next []int64) ([][]sample, error) {
	scale := int64(f.TimecodeScale)
	if f.TimecodeScale == 0 {
		scale = mkv.DefaultTimecodeScale
	} else if f.TimecodeScale > math.MaxInt64 {
		return nil, fmt.Errorf("%w: TimecodeScale %d", ErrTimeRange, f.TimecodeScale)
	}
	index := make(map[uint64]int, len(ts))
	for k := range ts {
		index[ts[k].number] = k
	}
	perTrack := make([][]sample, len(ts))
	for i := range f.Frames {
		fr := &f.Frames[i]
		k, ok := index[fr.Track]
		if !ok {
			return nil, fmt.Errorf("%w: frame %d is on track %d", ErrUnknownTrack, i, fr.Track)
		}
		if uint64(len(fr.Data)) > math.MaxUint32 {
			return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(fr.Data))
		}
		ns, err := frameTime(fr.Timecode, f.Timecode, scale, start)
		if err != nil {
			return nil, err
		}
		pts, err := toTicks(ns, ts[k].timescale)
		if err != nil {
			return nil, err
		}
		perTrack[k] = append(perTrack[k], sample{frame: i, pts: pts, dts: pts})
	}
	for k, smp := range perTrack {
		if len(smp) == 0 {
			continue
		}
		t := &ts[k]
		if t.video {
			sorted := make([]int64, len(smp))
			for i := range smp {
				sorted[i] = smp[i].pts
			}
			slices.Sort(sorted)
			var delay int64
			for i := range smp {
				delay = max(delay, sorted[i]-smp[i].pts)
			}
			for i := range smp {
				smp[i].dts = sorted[i] - delay
			}
			// A fragment whose reorder delay exceeds the previous one's would decode its first
			// samples at or before the previous fragment's last: players drop such samples (ffmpeg
			// discards the keyframe, and the rest of its GOP decodes from the wrong picture). Those
			// samples are moved later, one tick apart, never past their presentation time. The
			// same holds at the timeline's start (0): a fragment presented within its reorder
			// delay of it (a producer clock at the Unix epoch, HLS) decodes its first samples
			// from 0 on rather than failing.
			var lo int64
			if next != nil {
				lo = next[k]
			}
			for i := 0; i < len(smp) && smp[i].dts < lo; i++ {
				smp[i].dts = min(lo, smp[i].pts)
				lo = smp[i].dts + 1
			}
		} else {
			// Audio is stored in decode order with no reordering; keep decode times monotonic.
			for i := 1; i < len(smp); i++ {
				smp[i].dts = max(smp[i].dts, smp[i-1].dts)
				smp[i].pts = smp[i].dts
			}
		}
		for i := 0; i+1 < len(smp); i++ {
			smp[i].duration = smp[i+1].dts - smp[i].dts
		}
		last := &smp[len(smp)-1]
		switch fr := &f.Frames[last.frame]; {
		case fr.Duration > 0:
			ns, overflow := mulInt64(fr.Duration, scale)
			if overflow {
				return nil, fmt.Errorf("%w: BlockDuration %d", ErrTimeRange, fr.Duration)
			}
			last.duration = mulDivRound(ns, int64(t.timescale), 1e9)
		case t.defaultDuration > 0:
			last.duration = t.defaultDuration
		case len(smp) > 1:
			lo, hi := smp[0].pts, smp[0].pts
			for _, s := range smp {
				lo, hi = min(lo, s.pts), max(hi, s.pts)
			}
			last.duration = (hi - lo) / int64(len(smp)-1)
		default:
			last.duration = t.fallback
		}
		for _, s := range smp {
			// Composition offsets stay below 2^31 so that readers of signed (version 1) offsets agree.
			if s.duration < 0 || s.duration > math.MaxUint32 || s.pts-s.dts > math.MaxInt32 {
				return nil, fmt.Errorf("%w: sample duration over 2^32 or composition offset over 2^31 ticks", ErrTimeRange)
			}
		}
		perTrack[k] = smp
	}
	return perTrack, nil
}

// frameTime returns start + (tc − clusterTC)·scale in nanoseconds, or ErrTimeRange when that
// overflows or is negative.
func frameTime(tc, clusterTC, scale, start int64) (int64, error) {
	rel, overflow := subInt64(tc, clusterTC)
	if !overflow {
		rel, overflow = mulInt64(rel, scale)
	}
	if !overflow {
		rel, overflow = addInt64(rel, start)
	}
	if overflow || rel < 0 {
		return 0, fmt.Errorf("%w: frame timecode %d (cluster %d, scale %d ns) at %d ns on the timeline",
			ErrTimeRange, tc, clusterTC, scale, rel)
	}
	return rel, nil
}

// toTicks converts a non-negative time in nanoseconds to timescale units, rounding to nearest.
func toTicks(ns int64, timescale uint32) (int64, error) {
	hi, lo := bits.Mul64(uint64(ns), uint64(timescale))
	lo, carry := bits.Add64(lo, 5e8, 0)
	hi += carry
	if hi >= 1e9 {
		return 0, fmt.Errorf("%w: %d ns", ErrTimeRange, ns)
	}
	q, _ := bits.Div64(hi, lo, 1e9)
	if q > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %d ns", ErrTimeRange, ns)
	}
	return int64(q), nil
}

// mulDivRound returns round(a·b/c) for a ≥ 0, b ≥ 0, c > 0, saturating at MaxInt64.
func mulDivRound(a, b, c int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	lo, carry := bits.Add64(lo, uint64(c/2), 0)
	hi += carry
	if hi >= uint64(c) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

func addInt64(a, b int64) (int64, bool) {
	s := a + b
	return s, (a > 0 && b > 0 && s < 0) || (a < 0 && b < 0 && s >= 0)
}

func subInt64(a, b int64) (int64, bool) {
	d := a - b
	return d, (a >= 0 && b < 0 && d < 0) || (a < 0 && b > 0 && d >= 0)
}

func mulInt64(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, false
	}
	p := a * b
	return p, p/b != a || (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64)
}

// boxStart appends a box header with a size to be patched by boxEnd.
func boxStart(b []byte, typ string) []byte {
	b = append(b, 0, 0, 0, 0)
	return append(b, typ...)
}

// fullBoxStart appends a FullBox header (size to be patched, version and 24-bit flags).
func fullBoxStart(b []byte, typ string, version byte, flags uint32) []byte {
	b = boxStart(b, typ)
	return binary.BigEndian.AppendUint32(b, uint32(version)<<24|flags&0xFFFFFF)
}

// boxEnd patches the size of the box that starts at b[start:].
func boxEnd(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}
