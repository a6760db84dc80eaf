package cmd

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// streamPackets returns the packet presentation times (seconds, sorted) per codec type
// ("video", "audio") as ffprobe reads them from path.
func streamPackets(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	bin := testutil.NeedTool(t, "ffprobe")
	out, err := exec.CommandContext(t.Context(), bin, "-v", "error", "-show_entries", "stream=index,codec_type:packet=stream_index,pts_time",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe packets %s: %v", path, err)
	}
	var res struct {
		Streams []struct {
			Index     int    `json:"index"`
			CodecType string `json:"codec_type"`
		}
		Packets []struct {
			StreamIndex int     `json:"stream_index"`
			PTS         float64 `json:"pts_time,string"`
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	kinds := map[int]string{}
	for _, s := range res.Streams {
		kinds[s.Index] = s.CodecType
	}
	pts := map[string][]float64{}
	for _, p := range res.Packets {
		pts[kinds[p.StreamIndex]] = append(pts[kinds[p.StreamIndex]], p.PTS)
	}
	for _, v := range pts {
		slices.Sort(v)
	}
	return pts
}

// decodeAudio returns the first audio stream of each file decoded by ffmpeg as 16-bit PCM, in
// the order of paths. One ffmpeg decodes them all (a start costs more CPU than these
// decodes), each input with its own demuxer and decoder into its own output; any word on
// stderr fails the test, as for a single file.
func decodeAudio(t *testing.T, paths ...string) [][]byte {
	t.Helper()
	bin := testutil.NeedTool(t, "ffmpeg")
	args := []string{"-nostdin", "-v", "error"}
	for _, p := range paths {
		args = append(args, "-i", p)
	}
	dir := t.TempDir()
	outs := make([]string, len(paths))
	for i := range paths {
		outs[i] = filepath.Join(dir, strconv.Itoa(i)+".pcm")
		args = append(args, "-map", strconv.Itoa(i)+":a:0", "-f", "s16le", outs[i])
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg decode of %s: %v\n%s", strings.Join(paths, ", "), err, stderr.Bytes())
	}
	pcm := make([][]byte, len(paths))
	for i, out := range outs {
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		pcm[i] = b
	}
	return pcm
}

// samePCM reports where got differs from want, in 16-bit samples ("" when equal).
func samePCM(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < min(len(got), len(want)) && got[i] == want[i] {
		i++
	}
	return "got " + strconv.Itoa(len(got)/2) + " samples, want " + strconv.Itoa(len(want)/2) + "; first difference at sample " + strconv.Itoa(i/2)
}

// checkSync checks that every packet of got is where the source has it, moved by one common
// shift (that of the first video packet), within the millisecond kvs's timecodes round to; it
// returns the shift in seconds.
func checkSync(t *testing.T, what string, got, src map[string][]float64) float64 {
	t.Helper()
	if len(got["video"]) == 0 || len(src["video"]) == 0 {
		t.Fatalf("%s: no video packets (%d, source %d)", what, len(got["video"]), len(src["video"]))
	}
	shift := got["video"][0] - src["video"][0]
	for kind, want := range src {
		if len(got[kind]) != len(want) {
			t.Errorf("%s: %d %s packets, source %d", what, len(got[kind]), kind, len(want))
			continue
		}
		worst := 0.0
		for i := range want {
			worst = max(worst, math.Abs(got[kind][i]-want[i]-shift))
		}
		// Timecodes are whole milliseconds: the shift and each packet are rounded once.
		if worst > 0.001+1e-9 {
			t.Errorf("%s: %s packets move %.3f ms from the source's plus the common shift of %.3f ms", what, kind, worst*1000, shift*1000)
		}
	}
	return shift
}

// TestE2EAACPriming sends MP4 files whose AAC track starts with a priming frame that the edit
// list leaves out of the presentation (as ffmpeg writes them: 1024 samples) through put-media,
// kvs server and get-media. The priming frame must arrive, marked with a negative DiscardPadding,
// so that ffmpeg decodes exactly the source's PCM from the get-media output, with every packet
// kept and video and audio in the source's relation. h264_aac.mp4 has B-frames (its first video
// frame is decoded before the priming frame); the other clip has none (the priming frame is the
// first frame of the file in decode order).
//
// get-clip and HLS (fragmented MP4) carry every packet too, but have no per-sample discard that
// ffmpeg 5.1 applies (an edit list in a fragmented MP4 only moves its timestamps): there the
// priming frame's 1024 decoded samples come first, followed by exactly the source's PCM, and
// the video starts 1024 samples after them, as it does in the source.
func TestE2EAACPriming(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	testutil.NeedTool(t, "ffprobe")
	noBFrames := filepath.Join(t.TempDir(), "no_bframes.mp4")
	gen := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
		"-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ac", "1", noBFrames)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("making the clip without B-frames: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name, file string
		audio      int // packets: the priming frame and the presented ones
	}{
		{"B-frames", filepath.Join("..", "testdata", "h264_aac.mp4"), 189},
		{"no B-frames", noBFrames, 142},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, _ := e2eServer(t, nil)
			dir := t.TempDir()
			// One ffprobe per file for its packets' times and its decoded frames.
			source := ffprobe(t, tc.file)
			src := source.PTS
			if len(src["audio"]) != tc.audio || src["audio"][0] >= 0 {
				t.Fatalf("source: %d audio packets starting at %v; want %d with the priming frame before 0",
					len(src["audio"]), src["audio"][:1], tc.audio)
			}
			mustRun(t, url, nil, "put-media", "--stream-name", "aac", "--create", "--source", tc.file, "--fragment-duration", "1s")

			out := filepath.Join(dir, "get-media.mkv")
			mustRun(t, url, nil, "get-media", "--stream-name", "aac", "--start-selector", "EARLIEST", "--no-follow", "-o", out)
			got := ffprobe(t, out)
			shift := checkSync(t, "get-media", got.PTS, src)
			// Nothing may be before 0, so everything moved by the priming frame's 1024 samples.
			if want := 1024.0 / 48000; math.Abs(shift-want) > 0.001 {
				t.Errorf("get-media: video moved %.3f ms, want %.3f", shift*1000, want*1000)
			}
			// ffmpeg decodes (and drops) the priming frame: as many audio frames as from the source.
			if !maps.Equal(got.Frames, source.Frames) {
				t.Errorf("get-media: decoded frames %v, source %v", got.Frames, source.Frames)
			}

			clip := filepath.Join(dir, "clip.mp4")
			mustRun(t, url, nil, "get-clip", "--stream-name", "aac", "--start", "-1h", "--end", "now", "-o", clip)
			checkSync(t, "get-clip", streamPackets(t, clip), src)
			// The source's audio, get-media's and get-clip's, decoded by one ffmpeg.
			pcm := decodeAudio(t, tc.file, out, clip)
			srcPCM, primed := pcm[0], pcm[2]
			if d := samePCM(pcm[1], srcPCM); d != "" {
				t.Errorf("get-media: decoded audio differs from the source's: %s", d)
			}
			if len(primed) < 2048 {
				t.Fatalf("get-clip: %d bytes of audio", len(primed))
			}
			if d := samePCM(primed[2048:], srcPCM); d != "" {
				t.Errorf("get-clip: decoded audio after the priming frame's 1024 samples differs from the source's: %s", d)
			}

			hls := strings.TrimSpace(mustRun(t, url, nil, "hls-url", "--stream-name", "aac", "--playback-mode", "ON_DEMAND",
				"--start", "-1h", "--end", "now"))
			checkSync(t, "hls", streamPackets(t, hls), src)
		})
	}
}
