package fmp4

import (
	"fmt"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// One track alone: players that fetch each track from segments of its own (MPEG-DASH adaptation
// sets: dash.js and Shaka do not play video and audio muxed in one segment) take the init and
// media segments of one Matroska track at a time. The track is track_ID 1 of its segments; its
// timescale and timestamps are those AppendMediaSegment gives it, so a track's segments line up
// with the muxed ones.

// NewTrackInit returns the init segment of the track numbered number alone, out of tracks, which
// must be what NewInit takes (a video track among them). Errors are NewInit's, and ErrUnknownTrack
// when no track has that number.
func NewTrackInit(tracks []mkv.Track, number uint64) ([]byte, error) {
	one, err := trackAlone(tracks, number)
	if err != nil {
		return nil, err
	}
	return buildInit(one, 0)
}

// AppendTrackSegment appends the media segment of f's frames on track number alone, as
// AppendMediaSegment does for all of them. When f has frames but none on that track (the audio of
// a stream whose microphone stopped), the segment holds no sample: a track fragment with its
// decode time (start) and nothing else, which players step over, as the manifest that lists it
// expects; ErrEmptyFragment is for an f without frames.
func AppendTrackSegment(dst []byte, seq uint32, f *mkv.Fragment, number uint64, start time.Duration) ([]byte, error) {
	one, err := trackAlone(f.Tracks, number)
	if err != nil {
		return dst, err
	}
	return appendTrackSegment(dst, seq, f, number, one, int64(start), nil)
}

// appendTrackSegment is appendSegment of f's frames on track number alone (laid out as ts), or,
// when f has frames but none on that track, an empty segment.
func appendTrackSegment(dst []byte, seq uint32, f *mkv.Fragment, number uint64, ts []track, start int64, next []int64) ([]byte, error) {
	g := onTrack(f, number)
	if number != 0 && len(g.Frames) == 0 && len(f.Frames) > 0 {
		return appendEmptySegment(dst, seq, &ts[0], start)
	}
	return appendSegment(dst, seq, g, ts, start, next)
}

// trackAlone lays out tracks and keeps track number, as track_ID 1.
func trackAlone(tracks []mkv.Track, number uint64) ([]track, error) {
	ts, err := layout(tracks)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if t.number == number {
			t.id = 1
			return []track{t}, nil
		}
	}
	return nil, fmt.Errorf("%w: no track %d", ErrUnknownTrack, number)
}

// AppendSegmentAfter appends the media segment of f, as AppendMediaSegment does (number 0) or
// AppendTrackSegment of track number, when prev (placed at prevStart on the same timeline, nil
// for none) plays right before it. Segments made one by one decode each fragment's B-frames its
// own reorder delay early; where f's delay is longer than prev's, its first samples would decode
// at or before prev's last, and players drop them (ffmpeg discards the keyframe, and the rest of
// its GOP decodes from the wrong picture). Those samples are moved later, as Writer does; prev
// is only read, and ignored when its tracks differ from f's.
func AppendSegmentAfter(dst []byte, seq uint32, f *mkv.Fragment, number uint64, start time.Duration,
	prev *mkv.Fragment, prevStart time.Duration) ([]byte, error) {
	lay := func(tracks []mkv.Track) ([]track, error) {
		if number == 0 {
			return layout(tracks)
		}
		return trackAlone(tracks, number)
	}
	ts, err := lay(f.Tracks)
	if err != nil {
		return dst, err
	}
	next := nextAfter(ts, prev, prevStart, lay, number)
	return appendTrackSegment(dst, seq, f, number, ts, int64(start), next)
}

// nextAfter returns, per track of ts, the earliest decode time a fragment played right after prev
// (placed at prevStart; its tracks laid out by lay, of track number alone unless 0) may give its
// first sample: one tick after prev's last decode time. It is nil when there is no prev, or its
// tracks differ from ts.
func nextAfter(ts []track, prev *mkv.Fragment, prevStart time.Duration, lay func([]mkv.Track) ([]track, error), number uint64) []int64 {
	if prev == nil {
		return nil
	}
	pts, err := lay(prev.Tracks)
	if err != nil || !sameLayout(ts, pts) {
		return nil
	}
	smp, err := placeSamples(onTrack(prev, number), pts, int64(prevStart), nil)
	if err != nil {
		return nil
	}
	next := make([]int64, len(ts))
	for k, s := range smp {
		if len(s) > 0 {
			next[k] = s[len(s)-1].dts + 1
		}
	}
	return next
}

// onTrack returns f with only the frames of track number (all of them for 0).
func onTrack(f *mkv.Fragment, number uint64) *mkv.Fragment {
	if number == 0 {
		return f
	}
	g := *f
	g.Frames = make([]mkv.Frame, 0, len(f.Frames))
	for _, fr := range f.Frames {
		if fr.Track == number {
			g.Frames = append(g.Frames, fr)
		}
	}
	return &g
}
