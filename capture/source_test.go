package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

func testdata(name string) string { return filepath.Join("..", "testdata", name) }

// sourceCase is one golden clip and what a Source must make of it (see ../testdata/README.md).
type sourceCase struct {
	name        string
	file        string
	format      Format
	codecs      []string // per track, in order
	videoFrames int
	audioFrames int
	keyEvery    int // video keyframe interval in frames; 0: do not check
	bframes     bool
}

var sourceCases = []sourceCase{
	{name: "mkv h264", file: "h264.mkv", format: FormatMKV, codecs: []string{codec.CodecIDH264}, videoFrames: 100, keyEvery: 25, bframes: true},
	{name: "mkv h264 aac", file: "h264_aac.mkv", format: FormatMKV, codecs: []string{codec.CodecIDH264, codec.CodecIDAAC}, videoFrames: 100, audioFrames: 189, keyEvery: 25, bframes: true},
	{name: "mkv h265", file: "h265.mkv", format: FormatMKV, codecs: []string{codec.CodecIDH265}, videoFrames: 50, keyEvery: 25, bframes: true},
	{name: "webm vp8", file: "webm_vp8.webm", format: FormatMKV, codecs: []string{codec.CodecIDVP8}, videoFrames: 50, keyEvery: 25},
	{name: "mkv concatenated", file: "concatenated.mkv", format: FormatMKV, codecs: []string{codec.CodecIDH264}, videoFrames: 100, keyEvery: 25, bframes: true},
	{name: "mp4 h264 aac", file: "h264_aac.mp4", format: FormatMP4, codecs: []string{codec.CodecIDH264, codec.CodecIDAAC}, videoFrames: 100, audioFrames: 189, keyEvery: 25, bframes: true},
	{name: "annexb h264", file: "h264.h264", format: FormatAnnexB, codecs: []string{codec.CodecIDH264}, videoFrames: 100, keyEvery: 25},
	{name: "annexb h265", file: "h265.h265", format: FormatAnnexB, codecs: []string{codec.CodecIDH265}, videoFrames: 50, keyEvery: 25},
}

func readAll(t *testing.T, src Source) []Frame {
	t.Helper()
	var frames []Frame
	for {
		fr, err := src.ReadFrame(t.Context())
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		frames = append(frames, fr)
	}
}

func TestSources(t *testing.T) {
	t.Parallel()
	for _, tc := range sourceCases {
		t.Run(tc.name, func(t *testing.T) {
			src, err := openFile(t.Context(), testdata(tc.file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			tracks := src.Tracks()
			if len(tracks) != len(tc.codecs) {
				t.Fatalf("%d tracks, want %d", len(tracks), len(tc.codecs))
			}
			kinds := map[uint64]mkv.Track{}
			for i, tr := range tracks {
				if tr.CodecID != tc.codecs[i] {
					t.Errorf("track %d codec %q, want %q", i, tr.CodecID, tc.codecs[i])
				}
				kinds[tr.Number] = tr
				if c, ok := codec.FromCodecID(tr.CodecID); ok {
					ps, err := codec.ParseConfig(c, tr.CodecPrivate)
					if err != nil {
						t.Errorf("track %d CodecPrivate: %v", i, err)
					} else if ps.LengthSize != 4 {
						t.Errorf("track %d length size %d", i, ps.LengthSize)
					}
					if tr.Width != 320 || tr.Height != 240 {
						t.Errorf("track %d size %dx%d", i, tr.Width, tr.Height)
					}
				}
				if tr.CodecID == codec.CodecIDAAC {
					asc, err := codec.ParseAudioSpecificConfig(tr.CodecPrivate)
					if err != nil || asc.SampleRate != 48000 || asc.Channels != 1 {
						t.Errorf("AAC config %+v, %v", asc, err)
					}
				}
			}

			frames := readAll(t, src)
			var video, audio int
			lastDTS := map[uint64]time.Duration{}
			var videoPTS []time.Duration
			reordered := false
			for i, fr := range frames {
				tr, ok := kinds[fr.Track]
				if !ok {
					t.Fatalf("frame %d: unknown track %d", i, fr.Track)
				}
				if d, ok := lastDTS[fr.Track]; ok && fr.DTS < d {
					t.Errorf("frame %d: DTS %v after %v", i, fr.DTS, d)
				}
				lastDTS[fr.Track] = fr.DTS
				if fr.PTS < 0 {
					t.Errorf("frame %d: negative PTS %v", i, fr.PTS)
				}
				if c, ok := codec.FromCodecID(tr.CodecID); ok {
					if _, err := splitNALUs(walkAVCC, fr.Data); err != nil {
						t.Fatalf("frame %d: not length-prefixed: %v", i, err)
					}
					if fr.Keyframe != codec.IsKeyframeAVCC(c, fr.Data) {
						t.Errorf("frame %d: keyframe flag disagrees with the bitstream", i)
					}
				}
				switch tr.Type {
				case mkv.TrackTypeVideo:
					if tc.keyEvery > 0 && fr.Keyframe != (video%tc.keyEvery == 0) {
						t.Errorf("video frame %d: keyframe %v", video, fr.Keyframe)
					}
					if len(videoPTS) > 0 && fr.PTS < videoPTS[len(videoPTS)-1] {
						reordered = true
					}
					if fr.Keyframe && len(videoPTS) > 0 && fr.PTS <= slicesMax(videoPTS) {
						t.Errorf("video keyframe %d: PTS %v not after every earlier frame", video, fr.PTS)
					}
					videoPTS = append(videoPTS, fr.PTS)
					video++
				case mkv.TrackTypeAudio:
					audio++
				}
			}
			if video != tc.videoFrames || audio != tc.audioFrames {
				t.Errorf("%d video and %d audio frames, want %d and %d", video, audio, tc.videoFrames, tc.audioFrames)
			}
			if reordered != tc.bframes && tc.format != FormatAnnexB {
				t.Errorf("B-frame reordering seen %v, want %v", reordered, tc.bframes)
			}
			if tc.videoFrames > 0 {
				// 25 fps: the video spans (frames-1) * 40 ms of presentation time.
				span := slicesMax(videoPTS) - slicesMin(videoPTS)
				if want := time.Duration(tc.videoFrames-1) * 40 * time.Millisecond; span != want {
					t.Errorf("video PTS span %v, want %v", span, want)
				}
				if first := slicesMin(videoPTS); first > 100*time.Millisecond {
					t.Errorf("first video PTS %v, want near 0", first)
				}
			}
		})
	}
}

func slicesMin(s []time.Duration) time.Duration {
	m := s[0]
	for _, v := range s[1:] {
		m = min(m, v)
	}
	return m
}

func slicesMax(s []time.Duration) time.Duration {
	m := s[0]
	for _, v := range s[1:] {
		m = max(m, v)
	}
	return m
}

func TestAnnexBTimestamps(t *testing.T) {
	t.Parallel()
	src, err := openFile(t.Context(), testdata("h264.h264"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i, fr := range readAll(t, src) {
		if want := time.Duration(i) * 40 * time.Millisecond; fr.PTS != want || fr.DTS != want {
			t.Fatalf("frame %d: PTS %v DTS %v, want %v", i, fr.PTS, fr.DTS, want)
		}
	}
}

func TestAnnexBStdin(t *testing.T) {
	t.Parallel()
	// A pipe, not a file: the codec is detected from the SPS.
	data, err := os.ReadFile(testdata("h265.h265"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := Open(t.Context(), strings.NewReader(string(data)), "-", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := src.Tracks()[0].CodecID; got != codec.CodecIDH265 {
		t.Errorf("codec %s", got)
	}
	if n := len(readAll(t, src)); n != 50 {
		t.Errorf("%d frames", n)
	}
}

// TestAnnexBJoinedMidStream reads standard input joined to a raw H.264 stream at an arbitrary
// byte, inside a NAL unit, with the codec given (--codec h264), as from a FIFO or a UDP socket a
// camera already streams to: the bytes before the first start code are dropped, with a notice,
// and the frames from the next keyframe on are the stream's own.
func TestAnnexBJoinedMidStream(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(testdata("h264.h264"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := Open(t.Context(), bytes.NewReader(data), "-", Options{})
	if err != nil {
		t.Fatal(err)
	}
	all := readAll(t, full)
	// Inside a NAL unit: the first byte after the cut is not a start code.
	cut := len(data) / 3
	for data[cut] == 0 || data[cut] == 1 {
		cut++
	}
	var notices []string
	src, err := Open(t.Context(), strings.NewReader(string(data[cut:])), "-",
		Options{Codec: codec.H264, Notice: func(msg string) { notices = append(notices, msg) }})
	if err != nil {
		t.Fatalf("joined at byte %d of %d: %v", cut, len(data), err)
	}
	defer src.Close()
	frames := readAll(t, src)
	if len(frames) < 25 || len(frames) >= len(all) || !frames[0].Keyframe {
		t.Fatalf("%d frames (of %d), first keyframe %v", len(frames), len(all), len(frames) > 0 && frames[0].Keyframe)
	}
	for i, fr := range frames {
		if want := all[len(all)-len(frames)+i]; !bytes.Equal(fr.Data, want.Data) || fr.Keyframe != want.Keyframe {
			t.Fatalf("frame %d is not the stream's frame %d", i, len(all)-len(frames)+i)
		}
	}
	if !strings.Contains(strings.Join(notices, "\n"), "before the first start code") {
		t.Errorf("notices %q do not mention the bytes dropped before the first start code", notices)
	}
}

// TestAnnexBFrameRateOverridesSPS gives a frame rate (--frame-rate 50) for a stream whose SPS
// timing info says 25 fps: the one given wins, as for a camera whose SPS timing info is wrong,
// and a notice says the two disagree.
func TestAnnexBFrameRateOverridesSPS(t *testing.T) {
	t.Parallel()
	var notices []string
	src, err := openFile(t.Context(), testdata("h264.h264"), Options{FrameRate: 50, Notice: func(msg string) { notices = append(notices, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if d := src.Tracks()[0].DefaultDuration; d != 20*time.Millisecond {
		t.Errorf("DefaultDuration %v, want 20ms", d)
	}
	for i, fr := range readAll(t, src) {
		if want := time.Duration(i) * 20 * time.Millisecond; fr.PTS != want || fr.DTS != want {
			t.Fatalf("frame %d: PTS %v DTS %v, want %v", i, fr.PTS, fr.DTS, want)
		}
	}
	if !strings.Contains(strings.Join(notices, "\n"), "25") {
		t.Errorf("notices %q do not mention the SPS's 25 fps", notices)
	}
}

// bitWriter writes the exp-Golomb fields of a test SPS.
type bitWriter struct {
	b []byte
	n int // bits written
}

func (w *bitWriter) bit(v int) {
	if w.n%8 == 0 {
		w.b = append(w.b, 0)
	}
	if v != 0 {
		w.b[len(w.b)-1] |= 0x80 >> (w.n % 8)
	}
	w.n++
}

func (w *bitWriter) bits(v uint, n int) {
	for i := n - 1; i >= 0; i-- {
		w.bit(int(v>>i) & 1)
	}
}

func (w *bitWriter) ue(v uint) {
	v++
	n := 0
	for x := v; x > 1; x >>= 1 {
		n++
	}
	w.bits(0, n)
	w.bits(v, n+1)
}

// spsWithoutTiming returns a Baseline 320x240 H.264 SPS without VUI.
func spsWithoutTiming() []byte {
	var w bitWriter
	w.bits(0x67, 8)
	w.bits(66, 8) // profile_idc
	w.bits(0, 8)  // constraint flags
	w.bits(30, 8) // level_idc
	w.ue(0)       // seq_parameter_set_id
	w.ue(0)       // log2_max_frame_num_minus4
	w.ue(2)       // pic_order_cnt_type
	w.ue(1)       // max_num_ref_frames
	w.bit(0)      // gaps_in_frame_num_value_allowed_flag
	w.ue(19)      // pic_width_in_mbs_minus1
	w.ue(14)      // pic_height_in_map_units_minus1
	w.bit(1)      // frame_mbs_only_flag
	w.bit(1)      // direct_8x8_inference_flag
	w.bit(0)      // frame_cropping_flag
	w.bit(0)      // vui_parameters_present_flag
	w.bit(1)      // rbsp_stop_one_bit
	return w.b
}

// TestAnnexBNeedsFrameRate feeds a stream whose SPS has no timing info: the error must name the
// flag, and a frame rate given in Options must fix it.
func TestAnnexBNeedsFrameRate(t *testing.T) {
	t.Parallel()
	sps := spsWithoutTiming()
	info, err := codec.ParseSPS(codec.H264, sps)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.FrameRate(); ok || info.Width != 320 || info.Height != 240 {
		t.Fatalf("test SPS parses as %+v", info)
	}
	stream := annexB(sps, []byte{0x68, 0xCE, 0x3C, 0x80}, []byte{0x65, 0x88, 0x84, 0x00}, []byte{0x41, 0x9A, 0x00})
	_, err = Open(t.Context(), strings.NewReader(string(stream)), "-", Options{})
	if !errors.Is(err, ErrNeedFrameRate) || !strings.Contains(err.Error(), "--frame-rate") {
		t.Fatalf("error %v, want one naming --frame-rate", err)
	}
	src, err := Open(t.Context(), strings.NewReader(string(stream)), "-", Options{FrameRate: 10})
	if err != nil {
		t.Fatal(err)
	}
	frames := readAll(t, src)
	if len(frames) != 2 || frames[1].PTS != 100*time.Millisecond || !frames[0].Keyframe || frames[1].Keyframe {
		t.Errorf("frames %+v", frames)
	}
}

func annexB(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	mp4, err := os.Open(testdata("h264_aac.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer mp4.Close()
	pipe := io.MultiReader(mp4) // hides Seek
	for _, tc := range []struct {
		name string
		open func() (Source, error)
		want string
	}{
		{name: "mp4 from a pipe", open: func() (Source, error) { return Open(t.Context(), pipe, "-", Options{}) }, want: "needs seeking"},
		{name: "unknown", open: func() (Source, error) {
			return Open(t.Context(), strings.NewReader("hello world, not media"), "x.txt", Options{})
		}, want: "--format"},
		{name: "garbage annexb", open: func() (Source, error) {
			return Open(t.Context(), strings.NewReader("\x00\x00\x01\x09\xf0"), "-", Options{})
		}, want: "--codec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := tc.open()
			if err == nil {
				src.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

var sniffCases = []struct {
	name string
	head []byte
	want Format
}{
	{name: "ebml", head: []byte{0x1A, 0x45, 0xDF, 0xA3, 0x9F}, want: FormatMKV},
	{name: "ftyp", head: []byte("\x00\x00\x00\x20ftypisom"), want: FormatMP4},
	{name: "3-byte start code", head: []byte{0, 0, 1, 0x67}, want: FormatAnnexB},
	{name: "4-byte start code", head: []byte{0, 0, 0, 1, 0x40, 0x01}, want: FormatAnnexB},
	{name: "text", head: []byte("hello"), want: FormatAuto},
	{name: "empty", head: nil, want: FormatAuto},
}

func TestSniff(t *testing.T) {
	t.Parallel()
	for _, tc := range sniffCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sniff(tc.head); got != tc.want {
				t.Errorf("Sniff = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadFrameCancelled(t *testing.T) {
	t.Parallel()
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(t.Context())
	data, err := os.ReadFile(testdata("h264.mkv"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.Write(data[:4000]) }() // headers and a few frames, then nothing
	src, err := Open(ctx, r, "-", Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		for {
			if _, err := src.ReadFrame(ctx); err != nil {
				done <- err
				return
			}
		}
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

// fragmentedMP4 returns the path of a copy, in t's own directory, of h264_aac.mp4 remuxed by
// ffmpeg to fragmented MP4 with -movflags movflags.
func fragmentedMP4(t *testing.T, movflags string) string {
	t.Helper()
	return remuxedClip(t, "frag.mp4", "-movflags", movflags)
}

// remuxedClip returns the path of a copy, named name in t's own directory, of h264_aac.mp4
// remuxed by ffmpeg -c copy with the output options args. ffmpeg makes each once per test binary:
// two tests read the frag_keyframe+empty_moov+default_base_moof one.
func remuxedClip(t *testing.T, name string, args ...string) string {
	t.Helper()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	data, err := remuxedClips.Get(strings.Join(args, " "), func() ([]byte, error) {
		dir, err := os.MkdirTemp("", "kvs-capture-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(t.Context(), ffmpeg, slices.Concat([]string{"-v", "error", "-i", testdata("h264_aac.mp4"), "-c", "copy"}, args, []string{out})...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ffmpeg: %w: %s", err, b)
		}
		return os.ReadFile(out)
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var remuxedClips testutil.Memo[string, []byte] // ffmpeg output options → the file

// TestMP4Fragmented remuxes h264_aac.mp4 to fragmented MP4 with ffmpeg and checks that the
// fragmented path yields the same frames and timestamps as the progressive one.
func TestMP4Fragmented(t *testing.T) {
	t.Parallel()
	out := fragmentedMP4(t, "frag_keyframe+empty_moov+default_base_moof")
	read := func(path string) []Frame {
		src, err := openFile(t.Context(), path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		return readAll(t, src)
	}
	// ffmpeg writes no edit list with empty_moov, so the AAC priming frame is presented there
	// (no DiscardPadding) and timestamps are not shifted by it; the progressive file's edit list
	// makes it a priming frame to discard: compare the video, and count the audio.
	video := func(frames []Frame) (v []Frame, audio int) {
		for _, f := range frames {
			if f.Track == 1 {
				v = append(v, f)
			} else {
				audio++
			}
		}
		return v, audio
	}
	want, wantAudio := video(read(testdata("h264_aac.mp4")))
	got, gotAudio := video(read(out))
	if len(got) != len(want) || wantAudio != 189 || gotAudio != 189 {
		t.Fatalf("fragmented: %d video, %d audio frames; progressive %d and %d", len(got), gotAudio, len(want), wantAudio)
	}
	offset := got[0].PTS - want[0].PTS
	for i := range got {
		g, w := got[i], want[i]
		if g.PTS-w.PTS != offset || g.DTS-w.DTS != offset || g.Keyframe != w.Keyframe || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("video frame %d: fragmented %v %v %v, progressive %v %v %v", i, g.PTS, g.DTS, g.Keyframe, w.PTS, w.DTS, w.Keyframe)
		}
	}
	t.Logf("fragmented timestamps are %v after the progressive ones", offset)
}

// TestMP4TrimToEdit: audio samples before the edit list's start are kept with the part to
// discard when they start less than a second before it, and dropped when earlier.
func TestMP4TrimToEdit(t *testing.T) {
	t.Parallel()
	const rate = 48000
	for _, tc := range []struct {
		name  string
		shift int64
		want  string // first dts:skip pairs after trimming
	}{
		{name: "no edit", shift: 0, want: "0:0 1024:0"},
		{name: "ffmpeg priming (1024)", shift: 1024, want: "0:1024 1024:0 2048:0"},
		{name: "Apple priming (2112)", shift: 2112, want: "0:1024 1024:1024 2048:64 3072:0"},
		{name: "leading empty edit", shift: -4800, want: "0:0 1024:0"},
		// An edit 10 s in: the frames starting in its last second before are kept, the first of
		// them the one that covers 9 s.
		{name: "edit 10 s in", shift: 10 * rate, want: "431104:1024 432128:1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &mp4Track{timescale: rate, shift: tc.shift}
			for i := range 600 {
				tr.samples = append(tr.samples, mp4Sample{dts: int64(i) * 1024, dur: 1024, sync: true})
			}
			tr.trimToEdit()
			var got []string
			for _, smp := range tr.samples[:len(strings.Fields(tc.want))] {
				got = append(got, fmt.Sprintf("%d:%d", smp.dts, smp.skip))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("samples %s, want %s", g, tc.want)
			}
		})
	}
}

// TestMP4PrimingFrame: the AAC priming frame of an ffmpeg-made MP4 is read, with its whole
// duration to discard, and the timestamps of both tracks are shifted by its duration together,
// so that video and audio keep the relation they have in the source.
func TestMP4PrimingFrame(t *testing.T) {
	t.Parallel()
	src, err := openFile(t.Context(), testdata("h264_aac.mp4"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var video, audio []Frame
	for _, fr := range readAll(t, src) {
		if fr.Track == 1 {
			video = append(video, fr)
		} else {
			audio = append(audio, fr)
		}
	}
	frame := time.Second * 1024 / 48000 // 21.333 ms
	if p := audio[0]; p.PTS != 0 || p.DiscardPadding != -frame {
		t.Errorf("priming frame at %v, discard padding %v; want at 0, %v", p.PTS, p.DiscardPadding, -frame)
	}
	if a := audio[1]; a.PTS != frame || a.DiscardPadding != 0 {
		t.Errorf("first presented audio frame at %v, discard padding %v", a.PTS, a.DiscardPadding)
	}
	if v := slicesMin(func() (p []time.Duration) {
		for _, fr := range video {
			p = append(p, fr.PTS)
		}
		return p
	}()); v != frame {
		t.Errorf("first video frame presented at %v, want %v (with the first presented audio)", v, frame)
	}
}

// TestCodecPrivateMatchesFFmpeg checks that the avcC the Annex B source builds from in-band
// parameter sets is byte for byte the one ffmpeg wrote into the Matroska file of the same stream.
func TestCodecPrivateMatchesFFmpeg(t *testing.T) {
	t.Parallel()
	private := func(name string) []byte {
		src, err := openFile(t.Context(), testdata(name), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		return src.Tracks()[0].CodecPrivate
	}
	if a, b := private("h264.h264"), private("h264.mkv"); !bytes.Equal(a, b) {
		t.Errorf("avcC from Annex B\n%x\nffmpeg's\n%x", a, b)
	}
}

// TestMP4SampleSizeCap: a sample table that claims a huge sample is an error naming it, not a
// multi-gigabyte allocation.
func TestMP4SampleSizeCap(t *testing.T) {
	t.Parallel()
	b, i := clipBox(t, "stsz")
	if i < 4 || getU32(b[i+8:]) != 0 {
		t.Fatal("no stsz box with a size per sample in the clip")
	}
	first := i + 16 // after type, version+flags, uniform size, count
	putU32(b[first:], 0xFFFFFFF0)
	src, err := Open(t.Context(), bytes.NewReader(b), "big.mp4", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for {
		_, err = src.ReadFrame(t.Context())
		if err != nil {
			break
		}
	}
	if !strings.Contains(err.Error(), "more than the 52428800 a frame may have") {
		t.Fatalf("error %v, want the sample size cap", err)
	}
}

// A moov whose first trak has no mdia box made mp4ff's decoder panic (FuzzFragmenterReuse); Open
// says the file is malformed instead.
func TestMP4MalformedMoov(t *testing.T) {
	t.Parallel()
	b, i := clipBox(t, "mdia")
	if i < 0 {
		t.Fatal("no mdia box in the clip")
	}
	copy(b[i:], "mdix") // an unknown box: the trak has no mdia
	src, err := Open(t.Context(), bytes.NewReader(b), "broken.mp4", Options{})
	if err == nil {
		src.Close()
		t.Fatal("opened a file whose track has no mdia box")
	}
	if !strings.Contains(err.Error(), "mp4: malformed file") {
		t.Errorf("error %q, want it to say the MP4 is malformed", err)
	}
}

// clipBox returns a copy of h264_aac.mp4 and where the first box of type typ has its type (-1:
// nowhere).
func clipBox(t *testing.T, typ string) ([]byte, int) {
	t.Helper()
	b, err := os.ReadFile(testdata("h264_aac.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	return b, bytes.Index(b, []byte(typ))
}

func getU32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// openFile opens the media file at path as put-media does: Open over the *os.File, which the
// Source closes.
func openFile(ctx context.Context, path string, opts Options) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	src, err := Open(ctx, f, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return src, nil
}

// TestMP4FragmentedDataOffsets: the samples of every track of a fragmented MP4 are read from where
// its track fragment says, whichever way the file gives their base offset: explicit, the moof
// (default-base-is-moof), or neither, where a traf's data follows the data of the traf before it
// (ISO/IEC 14496-12 8.8.7.1; ffmpeg's omit_tfhd_offset writes that for video + audio). Without
// empty_moov, ffmpeg puts the first fragment's samples in the moov's sample tables and an mdat
// before the first moof: those frames are read too, not only the moofs'.
func TestMP4FragmentedDataOffsets(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffmpeg")
	read := func(path string) map[uint64][][]byte {
		src, err := openFile(t.Context(), path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		data := map[uint64][][]byte{}
		for _, f := range readAll(t, src) {
			data[f.Track] = append(data[f.Track], f.Data)
		}
		return data
	}
	want := read(testdata("h264_aac.mp4"))
	for _, movflags := range []string{"frag_keyframe+empty_moov+default_base_moof", "frag_keyframe+empty_moov+omit_tfhd_offset",
		"frag_keyframe+empty_moov+separate_moof", "frag_keyframe"} {
		t.Run(movflags, func(t *testing.T) {
			t.Parallel()
			got := read(fragmentedMP4(t, movflags))
			for track := uint64(1); track <= 2; track++ {
				if len(got[track]) != len(want[track]) {
					t.Fatalf("track %d: %d frames, progressive file %d", track, len(got[track]), len(want[track]))
				}
				for i := range got[track] {
					if !bytes.Equal(got[track][i], want[track][i]) {
						t.Fatalf("track %d frame %d: %d bytes %x..., progressive file's %d bytes %x...", track, i,
							len(got[track][i]), got[track][i][:min(8, len(got[track][i]))], len(want[track][i]), want[track][i][:min(8, len(want[track][i]))])
					}
				}
			}
		})
	}
}
