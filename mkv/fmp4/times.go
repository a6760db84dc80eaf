package fmp4

import (
	"time"

	"github.com/openkvs/kvs/mkv"
)

// FrameTime is where one frame of a fragment sits on the output timeline: the times
// AppendSegmentAfter gives its sample, for other containers (mkv/mpegts) that must keep the same
// timeline.
type FrameTime struct {
	Frame     int    // index into the fragment's Frames
	Track     uint64 // Matroska TrackNumber
	Video     bool
	Timescale uint32 // ticks a second: VideoTimescale for video, the sampling rate for audio
	PTS, DTS  int64  // presentation and decode time, in Timescale ticks
	Duration  int64  // in Timescale ticks, as the trun says
}

// Times returns the time of every frame of f as AppendSegmentAfter(dst, seq, f, 0, start, prev,
// prevStart) places it, track by track in the order of f.Tracks and, within a track, in the
// order of f.Frames. Errors are AppendSegmentAfter's (track errors, ErrEmptyFragment,
// ErrUnknownTrack, ErrTimeRange, ErrFrameTooLarge).
func Times(f *mkv.Fragment, start time.Duration, prev *mkv.Fragment, prevStart time.Duration) ([]FrameTime, error) {
	ts, err := layout(f.Tracks)
	if err != nil {
		return nil, err
	}
	if len(f.Frames) == 0 {
		return nil, ErrEmptyFragment
	}
	perTrack, err := placeSamples(f, ts, int64(start), nextAfter(ts, prev, prevStart, layout, 0))
	if err != nil {
		return nil, err
	}
	out := make([]FrameTime, 0, len(f.Frames))
	for k, smp := range perTrack {
		t := &ts[k]
		for _, s := range smp {
			out = append(out, FrameTime{Frame: s.frame, Track: t.number, Video: t.video, Timescale: t.timescale,
				PTS: s.pts, DTS: s.dts, Duration: s.duration})
		}
	}
	return out, nil
}
