package server

import "github.com/openkvs/kvs/mkv"

// videoSpan is f.Duration measured to the end of its first video track (mkv.Fragment.DurationTo),
// when it has one: a fragment lasts until its next keyframe, where the next one starts, and the
// last audio frame presented before that keyframe ends after it, in the next fragment's time.
// Counted to its end, consecutive fragments overlapped by it: their FragmentLengthInMilliseconds,
// and the EXTINF and DASH durations made from it, added up to more than the stream's span, and
// players of a DiscontinuityMode ALWAYS playlist, which place each segment after the previous one
// by its EXTINF, played slow. Audio that goes on after the video has stopped still counts, up to
// the start of its last frame.
func videoSpan(f *mkv.Fragment) int64 {
	if video := findTrack(f.Tracks, func(t *mkv.Track) bool { return t.Type == mkv.TrackTypeVideo }); video != nil {
		return f.DurationTo(video.Number)
	}
	return f.Duration()
}
