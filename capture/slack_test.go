package capture

import (
	"slices"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// TestFragmenterKeyframeDueOnTarget: a camera's pictures carry their capture times, which wander
// by milliseconds; a keyframe due on the fragment duration that came 1 ms early did not cut, so
// the fragment ran on to the next keyframe (2 s for 1 s). A keyframe within a quarter of a frame
// of the target cuts; a target between two frames still ends at the first frame after it.
func TestFragmenterKeyframeDueOnTarget(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	frames := func(n int, period time.Duration, keyEvery int, jitter func(i int) time.Duration) []Frame {
		var out []Frame
		for i := range n {
			pts := time.Duration(i)*period + jitter(i)
			out = append(out, Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: i%keyEvery == 0, Data: []byte{'v'}})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		target time.Duration
		period time.Duration // the video track's DefaultDuration, as a live source sets it
		frames []Frame
		want   []int // frames per fragment
	}{
		{name: "30 fps, keyframes every 30 frames, some 1-3 ms early", target: time.Second,
			frames: frames(120, time.Second/30, 30, func(i int) time.Duration { return -time.Duration(i%4) * ms }),
			want:   []int{30, 30, 30, 30}},
		{name: "30 fps, keyframes every 30 frames, some 1-3 ms late", target: time.Second,
			frames: frames(120, time.Second/30, 30, func(i int) time.Duration { return time.Duration(i%4) * ms }),
			want:   []int{30, 30, 30, 30}},
		{name: "15 fps, every frame a keyframe, 500 ms between two frames", target: 500 * ms,
			frames: frames(24, time.Second/15, 1, func(int) time.Duration { return 0 }),
			want:   []int{8, 8, 8}},
		// The live source forces the keyframe on a picture captured 997 ms after the last one
		// (that one was read 3 ms late), within its quarter of the 33 ms period; the picture
		// before it was read 20 ms late (the encoder was slow on it), so only 10 ms separate the
		// two: the Fragmenter's quarter of that, 2.6 ms, did not reach the keyframe, and the
		// fragment ran on to the next one (a GOP longer, or cut at MaxDuration inside it).
		{name: "30 fps, a forced keyframe 3 ms early after a frame read 20 ms late", target: time.Second, period: time.Second / 30,
			frames: frames(120, time.Second/30, 30, func(i int) time.Duration {
				switch {
				case i%30 == 0 && i > 0:
					return -3 * ms
				case i%30 == 29:
					return 20 * ms
				}
				return 0
			}),
			want: []int{30, 30, 30, 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr, err := NewFragmenter(&periodSource{listSource{frames: tc.frames}, tc.period}, FragmenterConfig{TargetDuration: tc.target})
			if err != nil {
				t.Fatal(err)
			}
			defer fr.Close()
			var got []int
			for _, f := range fragments(t, fr, 0) {
				got = append(got, len(f.Frames))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("frames per fragment %v, want %v", got, tc.want)
			}
		})
	}
}

// periodSource is a listSource whose video track has a DefaultDuration.
type periodSource struct {
	listSource
	period time.Duration
}

func (s *periodSource) Tracks() []mkv.Track {
	tracks := s.listSource.Tracks()
	tracks[0].DefaultDuration = s.period
	return tracks
}
