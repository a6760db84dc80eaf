package capture

import (
	"slices"
	"testing"
	"time"
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr, err := NewFragmenter(&listSource{frames: tc.frames}, FragmenterConfig{TargetDuration: tc.target})
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
