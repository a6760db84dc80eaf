package server

import (
	"math"

	"github.com/openkvs/kvs/mkv"
)

// videoSpan is f.Duration with the frames of tracks other than the first video track counting
// until they start rather than until they end, when f has video: a fragment lasts until its next
// keyframe, where the next one starts, and the last audio frame presented before that keyframe
// ends after it (an AAC frame at 48 kHz lasts 21 ms), in the next fragment's time. Counted to
// its end, consecutive fragments overlapped by it: their FragmentLengthInMilliseconds, and the
// EXTINF and DASH durations made from it, added up to more than the stream's span, and players
// of a DiscontinuityMode ALWAYS playlist, which place each segment after the previous one by
// its EXTINF, played slow. Audio that goes on after the video has stopped still counts, up to
// the start of its last frame.
func videoSpan(f *mkv.Fragment) int64 {
	video := findTrack(f.Tracks, func(t *mkv.Track) bool { return t.Type == mkv.TrackTypeVideo })
	if video == nil || len(f.Frames) == 0 {
		return f.Duration()
	}
	v := *f
	v.Frames = make([]mkv.Frame, 0, len(f.Frames))
	first, end := f.Frames[0].Timecode, int64(math.MinInt64)
	for _, fr := range f.Frames {
		first = min(first, fr.Timecode)
		if fr.Track == video.Number {
			v.Frames = append(v.Frames, fr)
		} else {
			end = max(end, fr.Timecode)
		}
	}
	if len(v.Frames) == 0 {
		return f.Duration()
	}
	vfirst := v.Frames[0].Timecode
	for _, fr := range v.Frames {
		vfirst = min(vfirst, fr.Timecode)
	}
	return max(end, vfirst+v.Duration()) - first
}
