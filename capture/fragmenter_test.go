package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

func fragments(t *testing.T, fr *Fragmenter, limit int) []*mkv.Fragment {
	t.Helper()
	var out []*mkv.Fragment
	for limit <= 0 || len(out) < limit {
		f, err := fr.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("fragment %d: %v", len(out), err)
		}
		out = append(out, f)
	}
	return out
}

func openFragmenter(t *testing.T, file string, cfg FragmenterConfig) *Fragmenter {
	t.Helper()
	src, err := openFile(t.Context(), testdata(file), Options{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := NewFragmenter(src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fr.Close() })
	return fr
}

// checkFragments checks the invariants every fragment sequence must hold and returns the number
// of video frames per fragment.
func checkFragments(t *testing.T, frags []*mkv.Fragment, video uint64) []int {
	t.Helper()
	var counts []int
	prevTC := int64(-1)
	for i, f := range frags {
		if f.TimecodeScale != mkv.DefaultTimecodeScale || f.DocType != "matroska" || len(f.Tracks) == 0 {
			t.Errorf("fragment %d: header %q %d, %d tracks", i, f.DocType, f.TimecodeScale, len(f.Tracks))
		}
		if f.Timecode < prevTC {
			t.Errorf("fragment %d: cluster timecode %d before the previous %d", i, f.Timecode, prevTC)
		}
		prevTC = f.Timecode
		if len(f.Frames) == 0 {
			t.Fatalf("fragment %d is empty", i)
		}
		first := f.Frames[0]
		if video != 0 && (first.Track != video || !first.Keyframe) {
			t.Errorf("fragment %d starts with track %d keyframe %v", i, first.Track, first.Keyframe)
		}
		n := 0
		for _, fr := range f.Frames {
			if rel := fr.Timecode - f.Timecode; rel < -32768 || rel > 32767 {
				t.Errorf("fragment %d: relative timecode %d", i, rel)
			}
			if fr.Track == video {
				n++
			}
		}
		// The writer accepts it.
		if _, err := mkv.AppendFragment(nil, f); err != nil {
			t.Errorf("fragment %d: %v", i, err)
		}
		counts = append(counts, n)
	}
	return counts
}

func TestFragmenterClips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		file   string
		target time.Duration
		want   []int // video frames per fragment
	}{
		{name: "mkv 1s", file: "h264.mkv", target: time.Second, want: []int{25, 25, 25, 25}},
		{name: "mkv 2s", file: "h264.mkv", target: 2 * time.Second, want: []int{50, 50}},
		{name: "mkv default", file: "h264.mkv", want: []int{50, 50}},
		{name: "mkv 1.5s waits for the next keyframe", file: "h264.mkv", target: 1500 * time.Millisecond, want: []int{50, 50}},
		{name: "mp4 with audio 1s", file: "h264_aac.mp4", target: time.Second, want: []int{25, 25, 25, 25}},
		{name: "annexb h265 1s", file: "h265.h265", target: time.Second, want: []int{25, 25}},
		{name: "mkv h265 1s", file: "h265.mkv", target: time.Second, want: []int{25, 25}},
		{name: "webm 1s", file: "webm_vp8.webm", target: time.Second, want: []int{25, 25}},
		{name: "concatenated 1s", file: "concatenated.mkv", target: time.Second, want: []int{25, 25, 25, 25}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := openFragmenter(t, tc.file, FragmenterConfig{TargetDuration: tc.target})
			frags := fragments(t, fr, 0)
			got := checkFragments(t, frags, 1)
			if len(got) != len(tc.want) {
				t.Fatalf("video frames per fragment %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("video frames per fragment %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestFragmenterMP4AudioKept: every audio frame of the MP4 is in the fragments, the AAC priming
// frame first, at the first fragment's cluster timecode and marked to be discarded, and the video
// starts with the first audio frame that is presented, as in the source.
func TestFragmenterMP4AudioKept(t *testing.T) {
	t.Parallel()
	frags := fragments(t, openFragmenter(t, "h264_aac.mp4", FragmenterConfig{TargetDuration: time.Second}), 0)
	var audio []mkv.Frame
	var firstVideo int64 = -1
	for _, f := range frags {
		for _, fr := range f.Frames {
			if fr.Track == 2 {
				audio = append(audio, fr)
			} else if firstVideo < 0 {
				firstVideo = fr.Timecode
			}
		}
	}
	if len(audio) != 189 {
		t.Fatalf("%d audio frames, want 189 (with the priming frame)", len(audio))
	}
	priming := audio[0]
	if priming.DiscardPadding != -21_333_333 || priming.Timecode != frags[0].Timecode {
		t.Errorf("priming frame at %d (cluster %d), discard padding %v; want at the cluster timecode and -1024 samples at 48 kHz",
			priming.Timecode, frags[0].Timecode, priming.DiscardPadding)
	}
	for i, fr := range audio[1:] {
		if fr.DiscardPadding != 0 {
			t.Errorf("audio frame %d: discard padding %v", i+1, fr.DiscardPadding)
		}
	}
	if audio[1].Timecode != 21 || firstVideo != 21 {
		t.Errorf("first presented audio frame at %d ms, first video frame at %d ms; want both at 21 (1024 samples after the priming frame)",
			audio[1].Timecode, firstVideo)
	}
}

// fakeSource yields synthetic frames: one track, a frame every step, keyframes where key says.
type fakeSource struct {
	track  mkv.Track
	n, max int
	step   time.Duration
	key    func(i int) bool
	closed bool
}

func (s *fakeSource) Tracks() []mkv.Track { return []mkv.Track{s.track} }
func (s *fakeSource) Close() error        { s.closed = true; return nil }
func (s *fakeSource) ReadFrame(ctx context.Context) (Frame, error) {
	if err := ctx.Err(); err != nil {
		return Frame{}, err
	}
	if s.n >= s.max {
		return Frame{}, io.EOF
	}
	t := time.Duration(s.n) * s.step
	fr := Frame{Track: 1, PTS: t, DTS: t, Keyframe: s.key(s.n), Data: []byte{byte(s.n)}}
	s.n++
	return fr, nil
}

func TestFragmenterAudioOnly(t *testing.T) {
	t.Parallel()
	// AAC at 48 kHz: 1024 samples = 21.333 ms per frame, 10 s.
	src := &fakeSource{track: mkv.Track{Number: 1, Type: mkv.TrackTypeAudio, CodecID: codec.CodecIDAAC, CodecPrivate: []byte{0x11, 0x88}},
		max: 469, step: time.Second * 1024 / 48000, key: func(int) bool { return true }}
	fr, err := NewFragmenter(src, FragmenterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	frags := fragments(t, fr, 0)
	checkFragments(t, frags, 0)
	if len(frags) != 5 {
		t.Fatalf("%d fragments, want 5", len(frags))
	}
	for i, f := range frags[:4] {
		if d := frags[i+1].Timecode - f.Timecode; d < 2000 || d > 2022 {
			t.Errorf("fragment %d lasts %d ms", i, d)
		}
	}
}

// listSource yields the given frames of a video track 1 and an AAC track 2.
type listSource struct{ frames []Frame }

func (s *listSource) Tracks() []mkv.Track {
	return []mkv.Track{
		{Number: 1, Type: mkv.TrackTypeVideo, CodecID: codec.CodecIDVP8},
		{Number: 2, Type: mkv.TrackTypeAudio, CodecID: codec.CodecIDAAC, CodecPrivate: []byte{0x11, 0x88}},
	}
}
func (s *listSource) Close() error { return nil }
func (s *listSource) ReadFrame(context.Context) (Frame, error) {
	if len(s.frames) == 0 {
		return Frame{}, io.EOF
	}
	fr := s.frames[0]
	s.frames = s.frames[1:]
	return fr, nil
}

// TestFragmenterLeadingAudio: audio that comes before the first video frame in decode order (the
// AAC priming frame of an MP4 without B-frames) starts the first fragment when that video frame is
// a keyframe; before a video frame that is not, it is dropped with the video.
func TestFragmenterLeadingAudio(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	v := func(pts time.Duration, key bool) Frame {
		return Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: key, Data: []byte{'v'}}
	}
	a := func(pts time.Duration) Frame {
		return Frame{Track: 2, PTS: pts, DTS: pts, Keyframe: true, Data: []byte{'a'}}
	}
	for _, tc := range []struct {
		name    string
		max     time.Duration
		frames  []Frame
		want    string // the first fragment: track@timecode
		dropped string // the notice, "" for none
	}{
		{name: "priming frame before the keyframe", frames: []Frame{
			{Track: 2, PTS: 0, DTS: 0, Keyframe: true, DiscardPadding: -21 * ms, Data: []byte{'p'}},
			v(21*ms, true), a(21 * ms), v(61*ms, false), a(42 * ms)},
			want: "2@0 1@21 2@21 1@61 2@42"},
		{name: "audio before a video frame that is not a keyframe", frames: []Frame{
			a(0), v(0, false), a(21 * ms), v(40*ms, true), a(42 * ms)},
			want: "1@40 2@42", dropped: "fragmenter: dropped 3 frames before the first video keyframe"},
		{name: "audio more than MaxDuration before the keyframe", max: time.Second, frames: []Frame{
			a(0), a(500 * ms), a(1200 * ms), v(1300*ms, true)},
			want: "2@500 2@1200 1@1300", dropped: "fragmenter: dropped 1 frames before the first video keyframe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var notices []string
			fr, err := NewFragmenter(&listSource{frames: tc.frames}, FragmenterConfig{TargetDuration: tc.max, MaxDuration: tc.max,
				Notice: func(m string) { notices = append(notices, m) }})
			if err != nil {
				t.Fatal(err)
			}
			frags := fragments(t, fr, 0)
			got := "none"
			if len(frags) > 0 {
				var parts []string
				for _, f := range frags[0].Frames {
					parts = append(parts, fmt.Sprintf("%d@%d", f.Track, f.Timecode))
				}
				got = strings.Join(parts, " ")
			}
			if got != tc.want {
				t.Errorf("first fragment %s, want %s", got, tc.want)
			}
			if strings.Join(notices, "; ") != tc.dropped {
				t.Errorf("notices %q, want %q", notices, tc.dropped)
			}
			if len(frags) > 0 && tc.frames[0].DiscardPadding != 0 && frags[0].Frames[0].DiscardPadding != tc.frames[0].DiscardPadding {
				t.Errorf("discard padding %v, want %v", frags[0].Frames[0].DiscardPadding, tc.frames[0].DiscardPadding)
			}
		})
	}
}

func TestFragmenterForcedCut(t *testing.T) {
	t.Parallel()
	// One keyframe, then 40 s of P-frames at 25 fps: cut at MaxDuration.
	src := &fakeSource{track: mkv.Track{Number: 1, Type: mkv.TrackTypeVideo, CodecID: codec.CodecIDVP8},
		max: 1000, step: 40 * time.Millisecond, key: func(i int) bool { return i == 0 }}
	var cuts []time.Duration
	fr, err := NewFragmenter(src, FragmenterConfig{MaxDuration: 10 * time.Second, OnForcedCut: func(tc time.Duration) { cuts = append(cuts, tc) }})
	if err != nil {
		t.Fatal(err)
	}
	frags := fragments(t, fr, 0)
	if len(frags) != 4 || len(cuts) != 3 {
		t.Fatalf("%d fragments, %d forced cuts; want 4 and 3", len(frags), len(cuts))
	}
	for _, f := range frags {
		if span := f.Frames[len(f.Frames)-1].Timecode - f.Timecode; span > 10000 {
			t.Errorf("fragment spans %d ms", span)
		}
	}
	if _, err := NewFragmenter(src, FragmenterConfig{MaxDuration: time.Minute}); err == nil {
		t.Error("MaxDuration over 32 s accepted")
	}
}

func TestFragmenterLoop(t *testing.T) {
	t.Parallel()
	reopen := func(ctx context.Context) (Source, error) { return openFile(ctx, testdata("h264.mkv"), Options{}) }
	src, err := reopen(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: time.Second, Loop: true, Reopen: reopen})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	frags := fragments(t, fr, 10)
	checkFragments(t, frags, 1)
	for i, f := range frags {
		if want := int64(i) * 1000; f.Timecode != want {
			t.Errorf("fragment %d: timecode %d, want %d", i, f.Timecode, want)
		}
		if len(f.Frames) != 25 {
			t.Errorf("fragment %d: %d frames", i, len(f.Frames))
		}
	}
	if _, err := NewFragmenter(src, FragmenterConfig{Loop: true}); err == nil {
		t.Error("Loop without Reopen accepted")
	}
}

func TestFragmenterRealtime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		src, err := openFile(t.Context(), testdata("h264.mkv"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: time.Second, Realtime: true})
		if err != nil {
			t.Fatal(err)
		}
		defer fr.Close()
		start := time.Now()
		var at []time.Duration
		for {
			_, err := fr.Next(t.Context())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			at = append(at, time.Since(start))
		}
		// A fragment is complete when the next keyframe arrives: at 1 s, 2 s, 3 s; the last at
		// the end of input, when the last frame (decode time 3.96 s... held to the running
		// maximum of PTS for Matroska) was paced.
		if len(at) != 4 {
			t.Fatalf("%d fragments", len(at))
		}
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
			if at[i] != want {
				t.Errorf("fragment %d returned at %v, want %v", i, at[i], want)
			}
		}
		if at[3] < 3900*time.Millisecond || at[3] > 4*time.Second {
			t.Errorf("last fragment returned at %v", at[3])
		}
	})
}

func TestFragmenterCancel(t *testing.T) {
	t.Parallel()
	src, err := openFile(t.Context(), testdata("h264.mkv"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := NewFragmenter(src, FragmenterConfig{Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := fr.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

// TestFragmentsPlay writes each clip's fragments as concatenated MKV documents (the GetMedia
// form) and checks with ffprobe that every frame is there with the source's codec.
func TestFragmentsPlay(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	ffprobe := testutil.NeedTool(t, "ffprobe")
	for _, tc := range []struct {
		file    string
		codecs  []string // ffprobe codec_name per stream
		packets []int
	}{
		{file: "h264.mkv", codecs: []string{"h264"}, packets: []int{100}},
		{file: "h264.h264", codecs: []string{"h264"}, packets: []int{100}},
		{file: "h265.h265", codecs: []string{"hevc"}, packets: []int{50}},
		{file: "h264_aac.mp4", codecs: []string{"h264", "aac"}, packets: []int{100, 189}},
		{file: "webm_vp8.webm", codecs: []string{"vp8"}, packets: []int{50}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			fr := openFragmenter(t, tc.file, FragmenterConfig{TargetDuration: time.Second})
			var out []byte
			for _, f := range fragments(t, fr, 0) {
				var err error
				if out, err = mkv.AppendFragment(out, f); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(t.TempDir(), "out.mkv")
			if err := os.WriteFile(path, out, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(t.Context(), ffprobe, "-v", "error", "-count_packets",
				"-show_entries", "stream=codec_name,nb_read_packets", "-of", "json", path)
			b, err := cmd.Output()
			if err != nil {
				t.Fatalf("ffprobe: %v", err)
			}
			var probe struct {
				Streams []struct {
					CodecName string `json:"codec_name"`
					Packets   string `json:"nb_read_packets"`
				}
			}
			if err := json.Unmarshal(b, &probe); err != nil {
				t.Fatal(err)
			}
			if len(probe.Streams) != len(tc.codecs) {
				t.Fatalf("ffprobe: %s", b)
			}
			for i, s := range probe.Streams {
				if s.CodecName != tc.codecs[i] || s.Packets != itoa(tc.packets[i]) {
					t.Errorf("stream %d: %s with %s packets, want %s with %d", i, s.CodecName, s.Packets, tc.codecs[i], tc.packets[i])
				}
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestFragmenterLoopWithoutKeyframe(t *testing.T) {
	t.Parallel()
	newSrc := func(context.Context) (Source, error) {
		return &fakeSource{track: mkv.Track{Number: 1, Type: mkv.TrackTypeVideo, CodecID: codec.CodecIDVP8},
			max: 10, step: 40 * time.Millisecond, key: func(int) bool { return false }}, nil
	}
	src, _ := newSrc(t.Context())
	fr, err := NewFragmenter(src, FragmenterConfig{Loop: true, Reopen: newSrc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Next(t.Context()); err == nil || !strings.Contains(err.Error(), "no keyframe") {
		t.Errorf("error %v, want one about the missing keyframe", err)
	}
}

// TestFragmenterReuseFrameData checks that ReuseFrameData yields the same fragments as the
// default (each compared before the next Next), that a fragment's data survives one more Next,
// and that the memory is in fact reused, with Loop (a pending frame across a reopen) included.
func TestFragmenterReuseFrameData(t *testing.T) {
	t.Parallel()
	// 2.5 s fragments of 1 s GOPs reach MaxDuration: they end at their last keyframe, and the
	// frames after it start the next fragment.
	for _, target := range []time.Duration{time.Second, 2500 * time.Millisecond} {
		for _, file := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv", "webm_vp8.webm", "h264_aac.mp4"} {
			t.Run(fmt.Sprint(target, " ", file), func(t *testing.T) {
				reopen := func(ctx context.Context) (Source, error) { return openFile(ctx, testdata(file), Options{}) }
				newFr := func(reuse bool) *Fragmenter {
					src, err := reopen(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: target, MaxDuration: target, Loop: true, Reopen: reopen, ReuseFrameData: reuse})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { fr.Close() })
					return fr
				}
				plain, reuse := newFr(false), newFr(true)
				_, lends := plain.src.(lender)
				var prev, prevCopy *mkv.Fragment
				var first []*byte // the first frame's data address of each reused fragment
				for i := range 12 {
					want, err := plain.Next(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					got, err := reuse.Next(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("fragment %d differs with ReuseFrameData", i)
					}
					if prev != nil && !reflect.DeepEqual(prev, prevCopy) {
						t.Fatalf("fragment %d changed when the next one was read", i-1)
					}
					prev, prevCopy = got, cloneFragment(got)
					first = append(first, &got.Frames[0].Data[0])
				}
				// Fragments two apart share an arena: the first frame goes to its start.
				reused := first[4] == first[6] && first[5] == first[7]
				if lends && !reused {
					t.Error("ReuseFrameData: the arenas are not reused")
				}
				if !lends && reused {
					t.Error("a source that does not lend its buffer had its frames moved")
				}
			})
		}
	}
}

func cloneFragment(f *mkv.Fragment) *mkv.Fragment {
	c := *f
	c.Frames = append([]mkv.Frame(nil), f.Frames...)
	for i := range c.Frames {
		c.Frames[i].Data = bytes.Clone(c.Frames[i].Data)
	}
	return &c
}

// scriptSource yields a script of frames and discontinuities; a discontinuity may bring a new
// picture size.
type scriptSource struct {
	width  uint32
	script []scriptStep
}

type scriptStep struct {
	frame Frame
	cut   bool   // ErrDiscontinuity
	width uint32 // with cut: the new width (0: unchanged)
}

func (s *scriptSource) Tracks() []mkv.Track {
	return []mkv.Track{{Number: 1, Type: mkv.TrackTypeVideo, CodecID: codec.CodecIDVP8, Width: s.width, Height: 240}}
}
func (s *scriptSource) Close() error { return nil }
func (s *scriptSource) ReadFrame(context.Context) (Frame, error) {
	if len(s.script) == 0 {
		return Frame{}, io.EOF
	}
	st := s.script[0]
	s.script = s.script[1:]
	if st.cut {
		if st.width != 0 {
			s.width = st.width
		}
		return Frame{}, ErrDiscontinuity
	}
	return st.frame, nil
}

// TestFragmenterDiscontinuity: a discontinuity ends the fragment in progress, frames up to the
// next keyframe are dropped, and fragments after a change of tracks carry the new ones (those
// before keep theirs).
func TestFragmenterDiscontinuity(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	v := func(pts time.Duration, key bool) scriptStep {
		return scriptStep{frame: Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: key, Data: []byte{'v'}}}
	}
	src := &scriptSource{width: 320, script: []scriptStep{
		v(0, true), v(40*ms, false), v(80*ms, false),
		{cut: true}, // the camera dropped: the fragment ends after 80 ms
		v(2000*ms, false), v(2040*ms, true), v(2080*ms, false),
		{cut: true, width: 640}, // a new picture size
		{cut: true},             // two in a row
		v(3000*ms, true), v(3040*ms, false), v(5000*ms, true),
	}}
	var notices []string
	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: time.Second, Notice: func(m string) { notices = append(notices, m) }})
	if err != nil {
		t.Fatal(err)
	}
	frags := fragments(t, fr, 0)
	var got []string
	for _, f := range frags {
		got = append(got, fmt.Sprintf("%d@%d/%d", f.Tracks[0].Width, f.Timecode, len(f.Frames)))
	}
	if want := "320@0/3 320@2040/2 640@3000/2 640@5000/1"; strings.Join(got, " ") != want {
		t.Errorf("fragments (width@timecode/frames) %s, want %s", strings.Join(got, " "), want)
	}
	checkFragments(t, frags, 1)
	if len(notices) != 1 || !strings.Contains(notices[0], "dropped 1 frames before the first video keyframe") {
		t.Errorf("notices %q", notices)
	}
}

// TestFragmenterNoKeyframe: an input whose video has no keyframe at all (cut out of a stream
// between two keyframes, or declared but empty) cannot give a fragment: Next says so instead of
// ending as if the input were empty. Frames dropped at the end after fragments were sent are a
// notice.
func TestFragmenterNoKeyframe(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	v := func(pts time.Duration, key bool) Frame {
		return Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: key, Data: []byte{'v'}}
	}
	a := func(pts time.Duration) Frame {
		return Frame{Track: 2, PTS: pts, DTS: pts, Keyframe: true, Data: []byte{'a'}}
	}
	for _, tc := range []struct {
		name   string
		frames []Frame
	}{
		{"video without keyframes", []Frame{a(0), v(0, false), a(21 * ms), v(40*ms, false), a(42 * ms)}},
		{"no video frames", []Frame{a(0), a(21 * ms), a(42 * ms)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr, err := NewFragmenter(&listSource{frames: tc.frames}, FragmenterConfig{})
			if err != nil {
				t.Fatal(err)
			}
			frag, err := fr.Next(t.Context())
			if !errors.Is(err, ErrNoKeyframe) || frag != nil {
				t.Fatalf("Next: %v, %v; want ErrNoKeyframe", frag, err)
			}
		})
	}

	// After a discontinuity, the frames up to the end have no keyframe: the fragment before is
	// sent, those frames are a notice.
	src := &scriptSource{width: 320, script: []scriptStep{
		{frame: v(0, true)}, {frame: v(40*ms, false)}, {cut: true}, {frame: v(2000*ms, false)}, {frame: v(2040*ms, false)},
	}}
	var notices []string
	fr, err := NewFragmenter(src, FragmenterConfig{Notice: func(m string) { notices = append(notices, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if frags := fragments(t, fr, 0); len(frags) != 1 || len(frags[0].Frames) != 2 {
		t.Fatalf("%d fragments, want 1 of 2 frames", len(frags))
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "dropped the last 2 frames") {
		t.Errorf("notices %q", notices)
	}
}

// failingSource is a listSource whose input fails after its frames, as a truncated file does.
type failingSource struct {
	listSource
	err error
}

func (s *failingSource) ReadFrame(ctx context.Context) (Frame, error) {
	if len(s.frames) == 0 {
		return Frame{}, s.err
	}
	return s.listSource.ReadFrame(ctx)
}

// TestFragmenterSourceFails: when the source fails mid-fragment (a recording cut short), the
// frames read before the failure go out as a last fragment, and the error comes after it.
func TestFragmenterSourceFails(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	var frames []Frame
	for i := range 60 { // 2.4 s of 25 fps video, a keyframe every second
		pts := time.Duration(i) * 40 * ms
		frames = append(frames, Frame{Track: 1, PTS: pts, DTS: pts, Keyframe: i%25 == 0, Data: []byte{byte(i)}})
	}
	truncated := fmt.Errorf("matroska: %w", io.ErrUnexpectedEOF)
	fr, err := NewFragmenter(&failingSource{listSource{frames}, truncated}, FragmenterConfig{TargetDuration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		f, err := fr.Next(t.Context())
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Next: %v, want the source's error", err)
			}
			break
		}
		got = append(got, len(f.Frames))
	}
	if fmt.Sprint(got) != "[25 25 10]" {
		t.Errorf("fragments of %v frames, want [25 25 10]: the frames before the failure sent", got)
	}
	if _, err := fr.Next(t.Context()); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Next after the error: %v, want it again", err)
	}
}

// TestFragmenterEndsAtLastKeyframe: a fragment that would pass MaxDuration before a keyframe at
// TargetDuration ends at its last keyframe instead of cutting a GOP (10 s fragments of 3 s GOPs
// are 9 s long), and the frames after that keyframe start the next fragment.
func TestFragmenterEndsAtLastKeyframe(t *testing.T) {
	t.Parallel()
	src := &fakeSource{track: mkv.Track{Number: 1, Type: mkv.TrackTypeVideo, CodecID: codec.CodecIDVP8},
		max: 1000, step: 40 * time.Millisecond, key: func(i int) bool { return i%75 == 0 }}
	var cuts []time.Duration
	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: 10 * time.Second, MaxDuration: 10 * time.Second,
		OnForcedCut: func(tc time.Duration) { cuts = append(cuts, tc) }})
	if err != nil {
		t.Fatal(err)
	}
	frags := fragments(t, fr, 0)
	checkFragments(t, frags, 1)
	var sizes []int
	for _, f := range frags {
		sizes = append(sizes, len(f.Frames))
	}
	if fmt.Sprint(sizes) != "[225 225 225 225 100]" || len(cuts) != 0 {
		t.Errorf("fragments of %v frames, %d cut inside a GOP; want [225 225 225 225 100] and none", sizes, len(cuts))
	}
}
