package capture

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFragmenterForcedCutEndsAtKeyframe: a fragment cut inside a GOP at MaxDuration (here by a
// 10 s hole in a recording, in the middle of a GOP) starts the next fragment with a non-keyframe,
// which a decoder cannot start at and kvs server refuses (INVALID_MKV_DATA); that fragment ends at
// the first keyframe, so the GOPs after it go out in fragments of their own. It ran on to the
// first keyframe at TargetDuration, and the refusal took the good GOPs at 13 s and 14 s with it.
func TestFragmenterForcedCutEndsAtKeyframe(t *testing.T) {
	t.Parallel()
	var script []scriptStep
	add := func(from, to time.Duration, keys ...time.Duration) {
		for pts := from; pts < to; pts += 100 * time.Millisecond {
			script = append(script, scriptStep{frame: Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: slices.Contains(keys, pts), Data: []byte{'v'}}})
		}
	}
	s := time.Second
	add(0, 2500*time.Millisecond, 0)                    // a GOP from 0 that the hole is in
	add(12500*time.Millisecond, 16*s, 13*s, 14*s, 15*s) // after the hole: keyframes at 13, 14, 15 s
	var cuts []time.Duration
	fr, err := NewFragmenter(&scriptSource{width: 320, script: script}, FragmenterConfig{MaxDuration: 10 * s,
		OnForcedCut: func(tc time.Duration) { cuts = append(cuts, tc) }})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fragments(t, fr, 0) {
		got = append(got, fmt.Sprintf("%d/%d", f.Timecode, len(f.Frames)))
	}
	if want := "0/25 12500/5 13000/20 15000/10"; strings.Join(got, " ") != want || len(cuts) != 1 {
		t.Errorf("fragments (timecode/frames) %s, %d forced cuts; want %s and 1", strings.Join(got, " "), len(cuts), want)
	}
}
