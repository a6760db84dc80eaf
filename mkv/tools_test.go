package mkv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"

	"github.com/openkvs/kvs/mkv"
)

// clips are the golden clips of ../testdata with their frame counts per track (testdata/README.md).
var clips = []struct {
	name   string
	codecs []string // ffprobe codec_name per stream
	frames []int    // per track, in track order
}{
	{"h264.mkv", []string{"h264"}, []int{100}},
	{"h264_aac.mkv", []string{"h264", "aac"}, []int{100, 189}},
	{"h265.mkv", []string{"hevc"}, []int{50}},
	{"webm_vp8.webm", []string{"vp8"}, []int{50}},
	{"concatenated.mkv", []string{"h264"}, []int{100}},
}

func readClip(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type probe struct {
	Streams []struct {
		Index        int    `json:"index"`
		CodecName    string `json:"codec_name"`
		NbReadFrames string `json:"nb_read_frames"`
		TimeBase     string `json:"time_base"`
	} `json:"streams"`
	Packets []struct {
		StreamIndex int    `json:"stream_index"`
		PTS         *int64 `json:"pts"`
		Flags       string `json:"flags"`
	} `json:"packets"`
}

// ffprobe runs ffprobe on a file, or on stdin when path is "-", and decodes its JSON. The
// repository's clips (under testdata) are probed once per test binary: they do not change while
// the tests run, and several tests compare against each.
func ffprobe(t *testing.T, path string, stdin []byte) probe {
	t.Helper()
	bin := testutil.NeedTool(t, "ffprobe")
	run := func() (probe, error) { return runFFprobe(t.Context(), bin, path, stdin) }
	var p probe
	var err error
	if stdin == nil && strings.Contains(path, "testdata") {
		p, err = clipProbes.Get(path, run)
	} else {
		p, err = run()
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var clipProbes testutil.Memo[string, probe] // testdata path → what ffprobe says of it

func runFFprobe(ctx context.Context, bin, path string, stdin []byte) (probe, error) {
	cmd := exec.CommandContext(ctx, bin, "-v", "error", "-count_frames", "-show_streams", "-show_packets", "-of", "json", path)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return probe{}, fmt.Errorf("ffprobe %s: %w\n%s", path, err, stderr.Bytes())
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		return probe{}, fmt.Errorf("ffprobe %s: %w", path, err)
	}
	return p, nil
}

// summary is what ffprobe says of a file: codec and decoded frame count per stream.
func (p probe) summary() string {
	var s string
	for _, st := range p.Streams {
		s += fmt.Sprintf("%s:%s ", st.CodecName, st.NbReadFrames)
	}
	return s
}

// rebasedPTS returns "stream:pts" for every packet, with pts moved so that the earliest is 0.
func (p probe) rebasedPTS() []string {
	first := int64(1 << 62)
	for _, pk := range p.Packets {
		if pk.PTS != nil {
			first = min(first, *pk.PTS)
		}
	}
	var out []string
	for _, pk := range p.Packets {
		if pk.PTS != nil {
			out = append(out, fmt.Sprintf("%d:%d", pk.StreamIndex, *pk.PTS-first))
		}
	}
	slices.Sort(out)
	return out
}

func wantSummary(codecs []string, frames []int) string {
	var s string
	for i := range codecs {
		s += fmt.Sprintf("%s:%d ", codecs[i], frames[i])
	}
	return s
}

type clipFrames struct {
	tracks []mkv.Track
	// per track index: timecodes (ticks) in file order and keyframe count
	timecodes [][]int64
	keyframes []int
}

func readFrames(t *testing.T, b []byte) clipFrames {
	t.Helper()
	r := mkv.NewReader(bytes.NewReader(b))
	var c clipFrames
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return c
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case mkv.EventTracks:
			if c.tracks == nil {
				c.tracks = ev.Tracks
				c.timecodes = make([][]int64, len(ev.Tracks))
				c.keyframes = make([]int, len(ev.Tracks))
			}
		case mkv.EventFrame:
			i := slices.IndexFunc(c.tracks, func(tr mkv.Track) bool { return tr.Number == ev.Frame.Track })
			if i < 0 {
				t.Fatalf("frame of unknown track %d", ev.Frame.Track)
			}
			if r.TimecodeScale() != mkv.DefaultTimecodeScale {
				t.Fatalf("scale %d", r.TimecodeScale())
			}
			c.timecodes[i] = append(c.timecodes[i], ev.Frame.Timecode)
			if ev.Frame.Keyframe {
				c.keyframes[i]++
			}
		}
	}
}

// The Reader finds in every golden clip the frames, timecodes and keyframes that ffprobe finds.
func TestClipsAgainstFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	for _, clip := range clips {
		t.Run(clip.name, func(t *testing.T) {
			b := readClip(t, clip.name)
			got := readFrames(t, b)
			p := ffprobe(t, filepath.Join("..", "testdata", clip.name), nil)
			if len(got.tracks) != len(p.Streams) {
				t.Fatalf("%d tracks, ffprobe %d streams", len(got.tracks), len(p.Streams))
			}
			for i := range got.tracks {
				if len(got.timecodes[i]) != clip.frames[i] {
					t.Errorf("track %d: %d frames, want %d", i, len(got.timecodes[i]), clip.frames[i])
				}
				if p.Streams[i].TimeBase != "1/1000" {
					t.Fatalf("time base %s", p.Streams[i].TimeBase)
				}
				var pts []int64
				keys := 0
				for _, pk := range p.Packets {
					if pk.StreamIndex == i && pk.PTS != nil {
						pts = append(pts, *pk.PTS)
						if pk.Flags[0] == 'K' {
							keys++
						}
					}
				}
				if !slices.Equal(got.timecodes[i], pts) {
					t.Errorf("track %d timecodes\n%v\nffprobe\n%v", i, got.timecodes[i], pts)
				}
				if got.keyframes[i] != keys {
					t.Errorf("track %d: %d keyframes, ffprobe %d", i, got.keyframes[i], keys)
				}
			}
		})
	}
}

// ebml-go, parsing the same clips, agrees on frame counts and timecodes.
func TestClipsAgainstEBMLGo(t *testing.T) {
	t.Parallel()
	for _, clip := range clips {
		t.Run(clip.name, func(t *testing.T) {
			b := readClip(t, clip.name)
			got := readFrames(t, b)
			var doc struct {
				Segment []struct {
					Tracks  webm.Tracks    `ebml:"Tracks"`
					Cluster []webm.Cluster `ebml:"Cluster"`
				} `ebml:"Segment"`
			}
			if err := ebml.Unmarshal(bytes.NewReader(b), &doc, ebml.WithIgnoreUnknown(true)); err != nil {
				t.Fatal(err)
			}
			want := make([][]int64, len(got.tracks))
			for _, seg := range doc.Segment {
				for _, c := range seg.Cluster {
					add := func(bl ebml.Block) {
						i := slices.IndexFunc(got.tracks, func(tr mkv.Track) bool { return tr.Number == bl.TrackNumber })
						for range bl.Data { // laced blocks: one frame per lace
							want[i] = append(want[i], int64(c.Timecode)+int64(bl.Timecode))
						}
					}
					for _, bl := range c.SimpleBlock {
						add(bl)
					}
					for _, g := range c.BlockGroup {
						add(g.Block)
					}
				}
			}
			for i := range want {
				// ebml-go groups SimpleBlocks and BlockGroups separately; compare as sets.
				g, w := slices.Clone(got.timecodes[i]), want[i]
				slices.Sort(g)
				slices.Sort(w)
				if !slices.Equal(g, w) {
					t.Errorf("track %d: %d frames, ebml-go %d", i, len(g), len(w))
				}
			}
		})
	}
}

// chunks turns a clip into a GetMedia-style stream: one AppendFragment document per cluster,
// with KVS tags.
func chunks(t *testing.T, b []byte) []byte {
	t.Helper()
	fr := mkv.NewFragmentReader(bytes.NewReader(b))
	var out []byte
	for n := 0; ; n++ {
		f, err := fr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Tags = []mkv.SimpleTag{{Name: mkv.TagFragmentNumber, Value: fmt.Sprint(n)}, {Name: mkv.TagServerTimestamp, Value: "1511852109.126"}}
		f.TrailingTags = []mkv.SimpleTag{{Name: mkv.TagMillisBehindNow, Value: "10"}, {Name: mkv.TagContinuationToken, Value: fmt.Sprint(n)}}
		if out, err = mkv.AppendFragment(out, f); err != nil {
			t.Fatal(err)
		}
	}
}

// streamOf turns clips, one after the other, into the StreamWriter's player stream.
func streamOf(t *testing.T, clips ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	sw := mkv.NewStreamWriter(&out)
	for _, b := range clips {
		fr := mkv.NewFragmentReader(bytes.NewReader(b))
		for {
			f, err := fr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := sw.WriteFragment(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// AppendFragment's chunks, concatenated as GetMedia returns them, play in ffprobe with every
// frame, from a file and from a pipe.
func TestChunksFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	for _, clip := range clips {
		t.Run(clip.name, func(t *testing.T) {
			out := chunks(t, readClip(t, clip.name))
			path := filepath.Join(t.TempDir(), "chunks"+filepath.Ext(clip.name))
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			want := wantSummary(clip.codecs, clip.frames)
			if got := ffprobe(t, path, nil).summary(); got != want {
				t.Errorf("file: %s, want %s", got, want)
			}
			if got := ffprobe(t, "-", out).summary(); got != want {
				t.Errorf("pipe: %s, want %s", got, want)
			}
		})
	}
}

// The StreamWriter's output plays in ffprobe (file and pipe), decodes without a complaint in
// ffmpeg from a pipe (what ffplay does), starts at 0, and mkvmerge identifies and remuxes it.
func TestStreamWriterPlayers(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	for _, clip := range clips {
		t.Run(clip.name, func(t *testing.T) {
			t.Parallel()
			out := streamOf(t, readClip(t, clip.name))
			dir := t.TempDir()
			path := filepath.Join(dir, "stream"+filepath.Ext(clip.name))
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			want := wantSummary(clip.codecs, clip.frames)
			p := ffprobe(t, path, nil)
			if got := p.summary(); got != want {
				t.Errorf("file: %s, want %s", got, want)
			}
			// Timestamps are the source's, moved to start at 0.
			src := ffprobe(t, filepath.Join("..", "testdata", clip.name), nil)
			if got, want := p.rebasedPTS(), src.rebasedPTS(); !slices.Equal(got, want) {
				t.Errorf("pts\n%v\nwant\n%v", got, want)
			}
			if got := ffprobe(t, "-", out).summary(); got != want {
				t.Errorf("pipe: %s, want %s", got, want)
			}

			ffmpeg := testutil.NeedTool(t, "ffmpeg")
			cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-i", "-", "-f", "null", "-")
			cmd.Stdin = bytes.NewReader(out)
			if msg, err := cmd.CombinedOutput(); err != nil || len(msg) != 0 {
				t.Errorf("ffmpeg decode from pipe: %v\n%s", err, msg)
			}

			mkvmerge := testutil.NeedTool(t, "mkvmerge")
			js, err := exec.CommandContext(t.Context(), mkvmerge, "-J", path).Output()
			if err != nil {
				t.Fatalf("mkvmerge -J: %v\n%s", err, js)
			}
			var id struct {
				Container struct {
					Recognized, Supported bool
					Type                  string
				}
				Tracks []struct {
					Codec string
					Type  string
				}
			}
			if err := json.Unmarshal(js, &id); err != nil {
				t.Fatal(err)
			}
			if !id.Container.Recognized || !id.Container.Supported || len(id.Tracks) != len(clip.codecs) {
				t.Errorf("mkvmerge -J: %s", js)
			}
			remuxed := filepath.Join(dir, "remuxed.mkv")
			if msg, err := exec.CommandContext(t.Context(), mkvmerge, "-q", "-o", remuxed, path).CombinedOutput(); err != nil {
				t.Errorf("mkvmerge -o: %v\n%s", err, msg)
			}
			if got := ffprobe(t, remuxed, nil).summary(); got != want {
				t.Errorf("remuxed: %s, want %s", got, want)
			}
		})
	}
}

// A camera reconfigured mid-stream (the H.264 picture size changes from 320x240 to 160x120, so
// the track's CodecPrivate does): the StreamWriter's output stays one Segment with the parameter
// sets in-band, and ffmpeg decodes every frame of both parts, from a pipe too, at both sizes;
// mkvmerge remuxes it whole. A change of codec (H.264 to H.265) still starts a new Segment.
func TestStreamWriterParameterSetChange(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	out := bytes.NewBuffer(streamOf(t, readClip(t, "h264.mkv"), readClip(t, "h264_160x120.mkv"), readClip(t, "h264.mkv")))
	if n := bytes.Count(out.Bytes(), []byte{0x18, 0x53, 0x80, 0x67}); n != 1 {
		t.Errorf("%d Segments, want 1", n)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "stream.mkv")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := wantSummary([]string{"h264"}, []int{250})
	if got := ffprobe(t, path, nil).summary(); got != want {
		t.Errorf("file: %s, want %s", got, want)
	}
	if got := ffprobe(t, "-", out.Bytes()).summary(); got != want {
		t.Errorf("pipe: %s, want %s", got, want)
	}
	// The decoded pictures: 100 at 320x240, 50 at 160x120, 100 at 320x240 again, in that order.
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "info", "-i", "-", "-vf", "showinfo", "-f", "null", "-")
	cmd.Stdin = bytes.NewReader(out.Bytes())
	msg, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg decode from pipe: %v\n%s", err, msg)
	}
	var sizes []string // runs of one picture size: "WxH×count"
	run := 0
	for _, line := range strings.Split(string(msg), "\n") {
		i := strings.Index(line, " s:")
		if !strings.Contains(line, "Parsed_showinfo") || i < 0 {
			continue
		}
		size := strings.Fields(line[i+3:])[0]
		if len(sizes) > 0 && strings.HasPrefix(sizes[len(sizes)-1], size+"×") {
			run++
			sizes[len(sizes)-1] = fmt.Sprintf("%s×%d", size, run)
			continue
		}
		run = 1
		sizes = append(sizes, size+"×1")
	}
	for _, line := range strings.Split(string(msg), "\n") {
		if strings.Contains(line, "[h264 @") || strings.Contains(line, "Error while decoding") {
			t.Errorf("ffmpeg: %s", line)
		}
	}
	if got := strings.Join(sizes, " "); got != "320x240×100 160x120×50 320x240×100" {
		t.Errorf("decoded pictures %s, want 320x240×100 160x120×50 320x240×100", got)
	}
	mkvmerge := testutil.NeedTool(t, "mkvmerge")
	remuxed := filepath.Join(dir, "remuxed.mkv")
	if msg, err := exec.CommandContext(t.Context(), mkvmerge, "-q", "-o", remuxed, path).CombinedOutput(); err != nil {
		t.Errorf("mkvmerge -o: %v\n%s", err, msg)
	}
	if got := ffprobe(t, remuxed, nil).summary(); got != want {
		t.Errorf("remuxed: %s, want %s", got, want)
	}

	// H.264 then H.265: a new Segment.
	if n := bytes.Count(streamOf(t, readClip(t, "h264.mkv"), readClip(t, "h265.mkv")), []byte{0x18, 0x53, 0x80, 0x67}); n != 2 {
		t.Errorf("H.264 then H.265: %d Segments, want 2", n)
	}
}
