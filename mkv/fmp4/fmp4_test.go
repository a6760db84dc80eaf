package fmp4

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
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/mkv"
)

// fragments cuts a test clip into fragments of about every (0: the clip's own clusters).
func fragments(t testing.TB, clip string, every time.Duration) []*mkv.Fragment {
	t.Helper()
	path := filepath.Join("..", "..", "testdata", clip)
	var out []*mkv.Fragment
	if every == 0 {
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		fr := mkv.NewFragmentReader(fh)
		for {
			f, err := fr.Next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
	}
	ctx := context.Background()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := capture.Open(ctx, file, path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := capture.NewFragmenter(src, capture.FragmenterConfig{TargetDuration: every})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	for {
		f, err := fr.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
}

type probeStream struct {
	CodecType    string `json:"codec_type"`
	CodecName    string `json:"codec_name"`
	CodecTag     string `json:"codec_tag_string"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	SampleRate   string `json:"sample_rate"`
	Channels     int    `json:"channels"`
	NbReadFrames string `json:"nb_read_frames"`
	StartTime    string `json:"start_time"`
}

// probe runs ffprobe -count_frames on path (a file or URL) and returns its streams. The
// repository's clips (under testdata) are probed once per test binary: they do not change while
// the tests run, and each is compared against several outputs.
func probe(t testing.TB, path string) []probeStream {
	t.Helper()
	ffprobe := testutil.NeedTool(t, "ffprobe")
	run := func() (probed, error) { return runProbe(ffprobe, path) }
	var p probed
	var err error
	if strings.Contains(path, "testdata") {
		p, err = clipProbes.Get(path, run)
	} else {
		p, err = run()
	}
	if err != nil {
		t.Fatal(err)
	}
	if p.stderr != "" {
		t.Errorf("ffprobe %s reported:\n%s", path, p.stderr)
	}
	return p.streams
}

// probed is ffprobe's answer: the streams, and what it said on stderr.
type probed struct {
	streams []probeStream
	stderr  string
}

var clipProbes testutil.Memo[string, probed] // testdata path → what ffprobe says of it

func runProbe(ffprobe, path string) (probed, error) {
	cmd := exec.Command(ffprobe, "-v", "error", "-count_frames", "-show_streams", "-of", "json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return probed{}, fmt.Errorf("ffprobe %s: %w\n%s", path, err, stderr.String())
	}
	var res struct{ Streams []probeStream }
	if err := json.Unmarshal(out, &res); err != nil {
		return probed{}, fmt.Errorf("ffprobe %s: %w", path, err)
	}
	return probed{res.Streams, stderr.String()}, nil
}

// decodeClean runs ffmpeg -v error -i path -f null - and fails on any output.
func decodeClean(t testing.TB, path string) {
	t.Helper()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("ffmpeg decode of %s: %v\n%s", path, err, out)
	}
}

// sameMedia checks that got has the streams of want: codecs, sizes, frame counts.
func sameMedia(t testing.TB, want, got []probeStream) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d streams, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.CodecType != w.CodecType || g.CodecName != w.CodecName || g.Width != w.Width || g.Height != w.Height ||
			g.SampleRate != w.SampleRate || g.Channels != w.Channels {
			t.Errorf("stream %d: got %+v, want %+v", i, g, w)
		}
		if g.NbReadFrames != w.NbReadFrames {
			t.Errorf("stream %d (%s): %s frames, want %s", i, w.CodecType, g.NbReadFrames, w.NbReadFrames)
		}
	}
}

var clips = []struct {
	name string
	clip string
	// frames as ffprobe counts them in our MP4 when they differ from its count in the source: the
	// MKV's AAC priming frame (ffprobe counts 189 there) is a real frame that we carry, so no
	// difference is expected.
	codecs string
}{
	{"h264", "h264.mkv", "avc1.64000D"},
	{"h264_aac", "h264_aac.mkv", "avc1.64000D,mp4a.40.2"},
	{"h265", "h265.mkv", "hvc1.1.6.L60.90"},
}

// TestWriterFFprobe writes each clip with Writer, cut into 1 s fragments and as its own clusters,
// and checks that ffprobe sees what it sees in the source and that ffmpeg decodes it cleanly.
func TestWriterFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	for _, tc := range clips {
		for _, every := range []time.Duration{time.Second, 0} {
			t.Run(tc.name+"/"+every.String(), func(t *testing.T) {
				t.Parallel()
				want := probe(t, filepath.Join("..", "..", "testdata", tc.clip))
				out := filepath.Join(t.TempDir(), "out.mp4")
				fh, err := os.Create(out)
				if err != nil {
					t.Fatal(err)
				}
				w := NewWriter(fh)
				for _, f := range fragments(t, tc.clip, every) {
					if err := w.WriteFragment(f, time.Time{}); err != nil {
						t.Fatal(err)
					}
				}
				if err := fh.Close(); err != nil {
					t.Fatal(err)
				}
				got := probe(t, out)
				sameMedia(t, want, got)
				for i, s := range got {
					// The edit list puts the first frame at 0, as in the source.
					if i < len(want) && s.StartTime != want[i].StartTime {
						t.Errorf("%s starts at %s, want %s", s.CodecType, s.StartTime, want[i].StartTime)
					}
				}
				decodeClean(t, out)
			})
		}
	}
}

// TestSegmentsFFprobe concatenates NewInit and AppendMediaSegment output on an absolute
// timeline, as the HLS handler serves it, and checks it the same way.
func TestSegmentsFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	base := 1_700_000_000 * time.Second
	for _, tc := range clips {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			frags := fragments(t, tc.clip, time.Second)
			init, err := NewInit(frags[0].Tracks)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Describe(frags[0].Tracks)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(m.Codecs, ","); got != tc.codecs {
				t.Errorf("codecs %s, want %s", got, tc.codecs)
			}
			if m.Width != 320 || m.Height != 240 {
				t.Errorf("size %dx%d, want 320x240", m.Width, m.Height)
			}
			file := init
			for i, f := range frags {
				start := base + time.Duration(f.Timecode)*time.Millisecond
				if file, err = AppendMediaSegment(file, uint32(i+1), f, start); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(t.TempDir(), "out.mp4")
			if err := os.WriteFile(out, file, 0o600); err != nil {
				t.Fatal(err)
			}
			sameMedia(t, probe(t, filepath.Join("..", "..", "testdata", tc.clip)), probe(t, out))
			decodeClean(t, out)
			checkStructure(t, file, frags, base)
		})
	}
}

// checkStructure parses the file with mp4ff and checks sample counts, sync samples and that
// decode times run on without gaps or overlaps from one fragment to the next.
func checkStructure(t *testing.T, file []byte, frags []*mkv.Fragment, base time.Duration) {
	t.Helper()
	parsed, err := mp4.DecodeFile(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.Segments) == 0 || parsed.Init == nil {
		t.Fatal("no init or no segments")
	}
	var mp4Frags []*mp4.Fragment
	for _, s := range parsed.Segments {
		mp4Frags = append(mp4Frags, s.Fragments...)
	}
	if len(mp4Frags) != len(frags) {
		t.Fatalf("%d fragments, want %d", len(mp4Frags), len(frags))
	}
	nextDecode := map[uint32]uint64{}
	for i, mf := range mp4Frags {
		var samples int
		for _, traf := range mf.Moof.Trafs {
			id := traf.Tfhd.TrackID
			trex, _ := parsed.Init.Moov.Mvex.GetTrex(id)
			fs, err := mf.GetFullSamples(trex)
			if err != nil {
				t.Fatal(err)
			}
			_ = fs
			var trackSamples []mp4.FullSample
			for _, s := range fs {
				if s.DecodeTime >= traf.Tfdt.BaseMediaDecodeTime() && len(trackSamples) < int(traf.Trun.SampleCount()) {
					trackSamples = append(trackSamples, s)
				}
			}
			samples += int(traf.Trun.SampleCount())
			if id == 1 && !mp4.IsSyncSampleFlags(traf.Trun.Samples[0].Flags) {
				t.Errorf("fragment %d: first video sample is not a sync sample", i)
			}
			if want, ok := nextDecode[id]; ok {
				got := traf.Tfdt.BaseMediaDecodeTime()
				ts := parsed.Init.Moov.Traks[id-1].Mdia.Mdhd.Timescale
				// one tick of a millisecond timecode at most, from rounding
				if d := int64(got) - int64(want); d < -int64(ts/1000) || d > int64(ts/1000) {
					t.Errorf("fragment %d track %d: decode time %d, previous fragment ended at %d", i, id, got, want)
				}
			}
			nextDecode[id] = traf.Tfdt.BaseMediaDecodeTime() + traf.Trun.Duration(0)
		}
		if samples != len(frags[i].Frames) {
			t.Errorf("fragment %d: %d samples, want %d", i, samples, len(frags[i].Frames))
		}
	}
	first := mp4Frags[0].Moof.Trafs[0]
	wantPTS := uint64((base/time.Second)*VideoTimescale) + uint64(frags[0].Frames[0].Timecode*VideoTimescale/1000)
	if pts := first.Tfdt.BaseMediaDecodeTime() + uint64(first.Trun.Samples[0].CompositionTimeOffset); pts != wantPTS {
		t.Errorf("first video sample presented at %d, want %d", pts, wantPTS)
	}
}

func TestTimingBFrames(t *testing.T) {
	t.Parallel()
	// Decode order I0 P3 B1 B2 with 40 ms frames: decode times are the sorted presentation times
	// (0 1 2 3) moved one frame earlier (B1 would otherwise be presented before it is decoded), so
	// the offsets are 1 2 0 0 frames.
	f := &mkv.Fragment{
		Tracks:   testTracks(t, "h264.mkv")[:1],
		Timecode: 1000,
		Frames: []mkv.Frame{
			{Track: 1, Timecode: 1000, Keyframe: true, Data: []byte{0, 0, 0, 1, 0x65}},
			{Track: 1, Timecode: 1120, Data: []byte{0, 0, 0, 1, 0x41}},
			{Track: 1, Timecode: 1040, Data: []byte{0, 0, 0, 1, 0x01}},
			{Track: 1, Timecode: 1080, Data: []byte{0, 0, 0, 1, 0x01}},
		},
	}
	seg, err := AppendMediaSegment(nil, 7, f, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := mp4.DecodeFile(bytes.NewReader(seg))
	if err != nil {
		t.Fatal(err)
	}
	frag := parsed.Segments[0].Fragments[0]
	traf := frag.Moof.Traf
	if seq := frag.Moof.Mfhd.SequenceNumber; seq != 7 {
		t.Errorf("sequence %d, want 7", seq)
	}
	if got, want := traf.Tfdt.BaseMediaDecodeTime(), uint64(90000-3600); got != want {
		t.Errorf("tfdt %d, want %d", got, want)
	}
	var ctos []int32
	var durs []uint32
	for _, s := range traf.Trun.Samples {
		ctos, durs = append(ctos, s.CompositionTimeOffset), append(durs, s.Dur)
	}
	if want := []int32{3600, 10800, 0, 0}; !equal(ctos, want) {
		t.Errorf("composition offsets %v, want %v", ctos, want)
	}
	if want := []uint32{3600, 3600, 3600, 3600}; !equal(durs, want) {
		t.Errorf("durations %v, want %v", durs, want)
	}
	if !mp4.IsSyncSampleFlags(traf.Trun.Samples[0].Flags) || mp4.IsSyncSampleFlags(traf.Trun.Samples[1].Flags) {
		t.Errorf("sync flags %#x %#x", traf.Trun.Samples[0].Flags, traf.Trun.Samples[1].Flags)
	}
	if got := frag.Mdat.Data; !bytes.Equal(got, []byte{0, 0, 0, 1, 0x65, 0, 0, 0, 1, 0x41, 0, 0, 0, 1, 0x01, 0, 0, 0, 1, 0x01}) {
		t.Errorf("mdat %x", got)
	}
	// At the very start of a timeline (a producer clock at the Unix epoch, in HLS) the reorder
	// delay has no room: the first decode times are moved to 0, 1 (never past their presentation),
	// every presentation time kept. It was ErrTimeRange, and the player's first segment 400.
	seg, err = AppendMediaSegment(nil, 1, f, 0)
	if err != nil {
		t.Fatalf("start 0: %v", err)
	}
	if parsed, err = mp4.DecodeFile(bytes.NewReader(seg)); err != nil {
		t.Fatal(err)
	}
	traf = parsed.Segments[0].Fragments[0].Moof.Traf
	var dts, pts []int64
	d := int64(traf.Tfdt.BaseMediaDecodeTime())
	for _, s := range traf.Trun.Samples {
		dts, pts = append(dts, d), append(pts, d+int64(s.CompositionTimeOffset))
		d += int64(s.Dur)
	}
	if want := []int64{0, 1, 3600, 7200}; !equal(dts, want) {
		t.Errorf("start 0: decode times %v, want %v", dts, want)
	}
	if want := []int64{0, 10800, 3600, 7200}; !equal(pts, want) {
		t.Errorf("start 0: presentation times %v, want %v", pts, want)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testTracks(t testing.TB, clip string) []mkv.Track {
	t.Helper()
	return fragments(t, clip, 0)[0].Tracks
}

func TestInitErrors(t *testing.T) {
	t.Parallel()
	h264 := testTracks(t, "h264_aac.mkv")
	video, audio := h264[0], h264[1]
	bad := func(mod func(*mkv.Track)) mkv.Track {
		tr := video
		mod(&tr)
		return tr
	}
	badAudio := audio
	badAudio.CodecPrivate = []byte{0xFF}
	tests := []struct {
		name   string
		tracks []mkv.Track
		want   error
	}{
		{"vp8", []mkv.Track{{Number: 1, Type: mkv.TrackTypeVideo, CodecID: "V_VP8", Width: 320, Height: 240}}, ErrUnsupportedCodec},
		{"opus", []mkv.Track{video, {Number: 2, Type: mkv.TrackTypeAudio, CodecID: "A_OPUS", CodecPrivate: []byte("OpusHead")}}, ErrUnsupportedCodec},
		{"g711", []mkv.Track{video, {Number: 2, Type: mkv.TrackTypeAudio, CodecID: "A_MS/ACM"}}, ErrUnsupportedCodec},
		{"audio only", []mkv.Track{audio}, ErrUnsupportedCodec},
		{"no tracks", nil, ErrUnsupportedCodec},
		{"no codec private", []mkv.Track{bad(func(t *mkv.Track) { t.CodecPrivate = nil })}, ErrMissingCodecPrivate},
		{"truncated avcC", []mkv.Track{bad(func(t *mkv.Track) { t.CodecPrivate = t.CodecPrivate[:8] })}, ErrInvalidCodecPrivate},
		{"avcC version 2", []mkv.Track{bad(func(t *mkv.Track) { t.CodecPrivate = append([]byte{2}, t.CodecPrivate[1:]...) })}, ErrInvalidCodecPrivate},
		{"hvcC as avcC", []mkv.Track{bad(func(t *mkv.Track) { t.CodecID = "V_MPEGH/ISO/HEVC" })}, ErrInvalidCodecPrivate},
		{"bad AudioSpecificConfig", []mkv.Track{video, badAudio}, ErrInvalidCodecPrivate},
		{"ok", h264, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewInit(tc.tracks)
			if !errors.Is(err, tc.want) {
				t.Fatalf("NewInit: %v, want %v", err, tc.want)
			}
			var te *TrackError
			if err != nil && !errors.As(err, &te) {
				t.Errorf("%v is not a *TrackError", err)
			}
			if _, err := Describe(tc.tracks); !errors.Is(err, tc.want) {
				t.Errorf("Describe: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSegmentErrors(t *testing.T) {
	t.Parallel()
	tracks := testTracks(t, "h264.mkv")
	key := mkv.Frame{Track: 1, Timecode: 0, Keyframe: true, Data: []byte{0, 0, 0, 1, 0x65}}
	other := key
	other.Track = 9
	tests := []struct {
		name  string
		f     mkv.Fragment
		start time.Duration
		want  error
	}{
		{"empty", mkv.Fragment{Tracks: tracks}, 0, ErrEmptyFragment},
		{"unknown track", mkv.Fragment{Tracks: tracks, Frames: []mkv.Frame{key, other}}, 0, ErrUnknownTrack},
		{"before the timeline", mkv.Fragment{Tracks: tracks, Timecode: 10, Frames: []mkv.Frame{key}}, 0, ErrTimeRange},
		{"huge scale", mkv.Fragment{Tracks: tracks, TimecodeScale: 1 << 62, Timecode: -100, Frames: []mkv.Frame{key}}, 0, ErrTimeRange},
		{"unsupported", mkv.Fragment{Tracks: []mkv.Track{{Number: 1, CodecID: "V_VP9"}}, Frames: []mkv.Frame{key}}, 0, ErrUnsupportedCodec},
		{"ok", mkv.Fragment{Tracks: tracks, Frames: []mkv.Frame{key}}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("prefix")
			out, err := AppendMediaSegment(dst, 1, &tc.f, tc.start)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if err != nil && string(out) != "prefix" {
				t.Errorf("dst changed on error: %q", out)
			}
		})
	}
}

func TestWriterTracksChanged(t *testing.T) {
	t.Parallel()
	a := fragments(t, "h264.mkv", time.Second)
	b := fragments(t, "h265.mkv", time.Second)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteFragment(a[0], time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFragment(b[1], time.Time{}); !errors.Is(err, ErrTracksChanged) {
		t.Fatalf("%v, want ErrTracksChanged", err)
	}
	if err := w.WriteFragment(a[1], time.Time{}); err != nil {
		t.Fatal(err)
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, io.ErrClosedPipe
	}
	w.n--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	t.Parallel()
	frags := fragments(t, "h264.mkv", time.Second)
	w := NewWriter(&failWriter{n: 1})
	if err := w.WriteFragment(frags[0], time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFragment(frags[1], time.Time{}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("%v, want io.ErrClosedPipe", err)
	}
	if err := w.WriteFragment(frags[2], time.Time{}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("not sticky: %v", err)
	}
}

// TestWriterClockBack places a fragment whose start goes back in time right after the previous.
func TestWriterClockBack(t *testing.T) {
	t.Parallel()
	frags := fragments(t, "h264.mkv", time.Second)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	t0 := time.Unix(1_700_000_000, 0)
	for i, at := range []time.Time{t0, t0.Add(time.Second), t0} {
		if err := w.WriteFragment(frags[i], at); err != nil {
			t.Fatal(err)
		}
	}
	parsed, err := mp4.DecodeFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var tfdts []uint64
	for _, s := range parsed.Segments {
		for _, f := range s.Fragments {
			tfdts = append(tfdts, f.Moof.Traf.Tfdt.BaseMediaDecodeTime())
		}
	}
	if len(tfdts) != 3 || tfdts[2] <= tfdts[1] {
		t.Errorf("decode times %v: the third fragment should follow the second", tfdts)
	}
}

// TestWriterReorderDelayGrows: a fragment with a longer reorder delay than the one before it (x264
// with adaptive B-frames: a GOP of I P P P, then one of I P B B) must not decode its keyframe at or
// before the previous fragment's last decode time (ffmpeg discards such a keyframe and decodes the
// rest of the GOP from the wrong picture). Decode times increase through the file, every
// composition offset stays non-negative and every presentation time is kept.
func TestWriterReorderDelayGrows(t *testing.T) {
	t.Parallel()
	tracks := testTracks(t, "h264.mkv")[:1]
	frame := func(tc int64, key bool) mkv.Frame {
		return mkv.Frame{Track: 1, Timecode: tc, Keyframe: key, Data: []byte{0, 0, 0, 1, 0x41}}
	}
	frags := []*mkv.Fragment{
		{Tracks: tracks, Timecode: 0, Frames: []mkv.Frame{frame(0, true), frame(40, false), frame(80, false), frame(120, false)}},
		{Tracks: tracks, Timecode: 160, Frames: []mkv.Frame{frame(160, true), frame(280, false), frame(200, false), frame(240, false)}},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	t0 := time.Unix(1_700_000_000, 0)
	for _, f := range frags {
		if err := w.WriteFragment(f, t0.Add(time.Duration(f.Timecode)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	parsed, err := mp4.DecodeFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var dts, pts []int64
	for _, s := range parsed.Segments {
		for _, f := range s.Fragments {
			d := int64(f.Moof.Traf.Tfdt.BaseMediaDecodeTime())
			for _, smp := range f.Moof.Traf.Trun.Samples {
				if smp.CompositionTimeOffset < 0 {
					t.Errorf("negative composition offset %d", smp.CompositionTimeOffset)
				}
				dts, pts = append(dts, d), append(pts, d+int64(smp.CompositionTimeOffset))
				d += int64(smp.Dur)
			}
		}
	}
	for i := 1; i < len(dts); i++ {
		if dts[i] <= dts[i-1] {
			t.Errorf("sample %d decodes at %d, not after sample %d (%d): decode times %v", i, dts[i], i-1, dts[i-1], dts)
		}
	}
	// 90 kHz: 40 ms is 3600 ticks; both fragments are shifted by the first one's delay (none).
	if want := []int64{0, 3600, 7200, 10800, 14400, 25200, 18000, 21600}; !equal(pts, want) {
		t.Errorf("presentation times %v, want %v", pts, want)
	}
}

// TestAACCodecs: the codecs parameter of an AAC track names the first audio object type of its
// AudioSpecificConfig (RFC 6381 3.3; ffmpeg's HLS and DASH muxers write the same): HE-AAC
// signalled explicitly is mp4a.40.5 (SBR) or mp4a.40.29 (SBR + PS), though its core is AAC LC.
func TestAACCodecs(t *testing.T) {
	t.Parallel()
	h264 := testTracks(t, "h264_aac.mkv")
	video, audio := h264[0], h264[1]
	for _, tc := range []struct {
		name string
		asc  []byte
		want string
	}{
		{"AAC LC", audio.CodecPrivate, "mp4a.40.2"},
		// AOT 5, 24 kHz, stereo, extension 48 kHz, AOT 2, GASpecificConfig 0.
		{"HE-AAC", []byte{0x2B, 0x11, 0x88, 0x00}, "mp4a.40.5"},
		// AOT 29, 24 kHz, mono, extension 48 kHz, AOT 2, GASpecificConfig 0.
		{"HE-AAC v2", []byte{0xEB, 0x09, 0x88, 0x00}, "mp4a.40.29"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := audio
			a.CodecPrivate = tc.asc
			m, err := Describe([]mkv.Track{video, a})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Tracks[1].Codecs; got != tc.want {
				t.Errorf("codecs %q, want %q", got, tc.want)
			}
		})
	}
}
