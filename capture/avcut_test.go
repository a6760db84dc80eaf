package capture

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFragmenterAudioByPresentationTime: H.264+AAC files (B-frames: each keyframe is decoded
// 80 ms before it is presented, and the files, interleaved by decode time, have the audio of
// those 80 ms after it). Every fragment after the first starts at its keyframe, with no frame
// presented before it, and its audio ends before the next fragment's keyframe: fragments tile
// the timeline as the KVS producer SDK's do. The audio was cut by file order, so each fragment
// started up to 80 ms before its keyframe and overlapped the one before by that much.
func TestFragmenterAudioByPresentationTime(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"h264_aac.mp4", "h264_aac.mkv"} {
		t.Run(file, func(t *testing.T) {
			frags := fragments(t, openFragmenter(t, file, FragmenterConfig{TargetDuration: time.Second}), 0)
			if got := checkFragments(t, frags, 1); fmt.Sprint(got) != "[25 25 25 25]" {
				t.Fatalf("video frames per fragment %v, want [25 25 25 25]", got)
			}
			audio := 0
			for i, f := range frags {
				key := f.Frames[0].Timecode
				for _, fr := range f.Frames {
					if fr.Track != 2 {
						continue
					}
					audio++
					if i > 0 && fr.Timecode < key {
						t.Errorf("fragment %d (keyframe at %d ms): audio at %d ms", i, key, fr.Timecode)
					}
					if i+1 < len(frags) && fr.Timecode >= frags[i+1].Frames[0].Timecode {
						t.Errorf("fragment %d: audio at %d ms, after the next fragment's keyframe at %d", i, fr.Timecode, frags[i+1].Frames[0].Timecode)
					}
				}
				if i > 0 && f.Timecode != key {
					t.Errorf("fragment %d: cluster timecode %d, keyframe at %d", i, f.Timecode, key)
				}
			}
			if audio != 189 {
				t.Errorf("%d audio frames, want 189", audio)
			}
		})
	}
}

// videoFrame is a frame of listSource's video track.
func videoFrame(pts, dts time.Duration, key bool) Frame {
	return Frame{Track: 1, PTS: pts, DTS: dts, Keyframe: key, Data: []byte{'v'}}
}

// audioFrame is a frame of listSource's audio track.
func audioFrame(pts time.Duration) Frame {
	return Frame{Track: 2, PTS: pts, DTS: pts, Keyframe: true, Data: []byte{'a'}}
}

// TestFragmenterCutReadsAhead: where the frames of other tracks go at a cut, whatever their
// order in the source: those presented before the keyframe end the fragment, the others start
// the next one after the keyframe; the cut reads ahead for them up to the end of the input, the
// next keyframe, or video decoded maxInterleave after the keyframe.
func TestFragmenterCutReadsAhead(t *testing.T) {
	t.Parallel()
	ms, v, a := time.Millisecond, videoFrame, audioFrame
	for _, tc := range []struct {
		name   string
		frames []Frame
		want   string // fragments, "|" between them: track@timecode
	}{
		{name: "audio of the reorder delay after the keyframe", frames: []Frame{
			v(0, 0, true), a(0), v(500*ms, 400*ms, false), a(600 * ms), v(1000*ms, 900*ms, true), a(900 * ms), a(950 * ms),
			v(1100*ms, 1000*ms, false), a(1000 * ms), a(1050 * ms)},
			want: "1@0 2@0 1@500 2@600 2@900 2@950 | 1@1000 1@1100 2@1000 2@1050"},
		{name: "audio ahead of the video", frames: []Frame{
			v(0, 0, true), a(0), a(600 * ms), a(1000 * ms), a(1050 * ms), v(1000*ms, 1000*ms, true), v(1100*ms, 1100*ms, false)},
			want: "1@0 2@0 2@600 | 1@1000 2@1000 2@1050 1@1100"},
		{name: "the input ends while reading ahead", frames: []Frame{
			v(0, 0, true), a(0), v(1000*ms, 900*ms, true), a(950 * ms)},
			want: "1@0 2@0 2@950 | 1@1000"},
		{name: "the audio stops", frames: []Frame{
			v(0, 0, true), a(0), v(1000*ms, 1000*ms, true), v(1500*ms, 1500*ms, false), v(2100*ms, 2100*ms, false),
			v(2200*ms, 2200*ms, false), v(3000*ms, 3000*ms, true)},
			want: "1@0 2@0 | 1@1000 1@1500 1@2100 1@2200 | 1@3000"},
		{name: "the next keyframe comes first", frames: []Frame{
			v(0, 0, true), a(0), v(1000*ms, 1000*ms, true), v(1040*ms, 1040*ms, true), a(990 * ms), v(2000*ms, 2000*ms, true)},
			want: "1@0 2@0 | 1@1000 1@1040 2@990 | 1@2000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr, err := NewFragmenter(&listSource{frames: tc.frames}, FragmenterConfig{TargetDuration: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, f := range fragments(t, fr, 0) {
				var p []string
				for _, x := range f.Frames {
					p = append(p, fmt.Sprintf("%d@%d", x.Track, x.Timecode))
				}
				parts = append(parts, strings.Join(p, " "))
			}
			if got := strings.Join(parts, " | "); got != tc.want {
				t.Errorf("fragments\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
