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
// AppendMediaSegment does for all of them. ErrEmptyFragment: f has no frame on that track.
func AppendTrackSegment(dst []byte, seq uint32, f *mkv.Fragment, number uint64, start time.Duration) ([]byte, error) {
	one, err := trackAlone(f.Tracks, number)
	if err != nil {
		return dst, err
	}
	g := *f
	g.Frames = make([]mkv.Frame, 0, len(f.Frames))
	for _, fr := range f.Frames {
		if fr.Track == number {
			g.Frames = append(g.Frames, fr)
		}
	}
	return appendSegment(dst, seq, &g, one, int64(start), nil)
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
