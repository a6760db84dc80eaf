package capture

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv/codec"
)

// TestMKVLacedOpusTimestamps: mkvmerge laces Opus (8 frames to a SimpleBlock, Xiph lacing) and
// writes neither a DefaultDuration nor a BlockDuration for it, so each laced frame's time comes
// from the durations its TOC byte gives (RFC 6716 3.1), as ffmpeg reads them. The frames of a
// block all had the block's timecode: put-media stored 8 audio frames at one timestamp, then 8 at
// the next block's, which players and remuxers (non monotonic DTS) choke on.
func TestMKVLacedOpusTimestamps(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	ffprobe := testutil.NeedTool(t, "ffprobe")
	mkvmerge := testutil.NeedTool(t, "mkvmerge")
	dir := t.TempDir()
	src, laced := filepath.Join(dir, "in.webm"), filepath.Join(dir, "laced.webm")
	run := func(name string, args ...string) []byte {
		t.Helper()
		b, err := exec.CommandContext(t.Context(), name, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return b
	}
	run(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus", src)
	run(mkvmerge, "-q", "-w", "-o", laced, src)

	var probe struct {
		Packets []struct {
			PTS string `json:"pts_time"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(run(ffprobe, "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts_time", "-of", "json", laced), &probe); err != nil {
		t.Fatal(err)
	}
	s, err := openFile(t.Context(), laced, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var audio uint64
	for _, tr := range s.Tracks() {
		if tr.CodecID == codec.CodecIDOpus {
			audio = tr.Number
		}
	}
	var got []time.Duration
	for _, f := range readAll(t, s) {
		if f.Track == audio {
			got = append(got, f.PTS)
		}
	}
	if len(got) != len(probe.Packets) || len(got) < 40 {
		t.Fatalf("%d Opus frames, ffprobe reads %d", len(got), len(probe.Packets))
	}
	first, _ := strconv.ParseFloat(probe.Packets[0].PTS, 64)
	for i, p := range probe.Packets {
		v, err := strconv.ParseFloat(p.PTS, 64)
		if err != nil {
			t.Fatalf("ffprobe packet %d pts %q", i, p.PTS)
		}
		want := time.Duration((v - first) * float64(time.Second)).Round(time.Millisecond)
		if d := got[i] - got[0]; d != want {
			t.Fatalf("Opus frame %d at %v after the first, ffprobe says %v", i, d, want)
		}
	}
}
