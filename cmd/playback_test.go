package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server"
)

func TestGetClipOptionsValidate(t *testing.T) {
	t.Parallel()
	s := streamRef{Name: "cam"}
	cases := []struct {
		name string
		o    getClipOptions
		ok   bool
	}{
		{"ok", getClipOptions{Stream: s, Range: fragmentRange{Start: "-1h", End: "now", TimestampType: "server"}}, true},
		{"producer", getClipOptions{Stream: s, Range: fragmentRange{Start: "1705489836", End: "1705489840.5", TimestampType: "producer"}}, true},
		{"no stream", getClipOptions{Range: fragmentRange{Start: "-1h", End: "now", TimestampType: "server"}}, false},
		{"no start", getClipOptions{Stream: s, Range: fragmentRange{End: "now", TimestampType: "server"}}, false},
		{"no end", getClipOptions{Stream: s, Range: fragmentRange{Start: "-1h", TimestampType: "server"}}, false},
		{"end before start", getClipOptions{Stream: s, Range: fragmentRange{Start: "now", End: "-1h", TimestampType: "server"}}, false},
		{"bad time", getClipOptions{Stream: s, Range: fragmentRange{Start: "yesterday", End: "now", TimestampType: "server"}}, false},
		{"bad type", getClipOptions{Stream: s, Range: fragmentRange{Start: "-1h", End: "now", TimestampType: "arrival"}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.o.validate(); (err == nil) != tc.ok {
				t.Errorf("validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestHLSURLOptionsValidate(t *testing.T) {
	t.Parallel()
	s := streamRef{Name: "cam"}
	cases := []struct {
		name string
		o    hlsURLOptions
		ok   bool
	}{
		{"live", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", Range: fragmentRange{TimestampType: "server"}}, true},
		{"lower case mode", hlsURLOptions{Stream: s, PlaybackMode: "on_demand", Range: fragmentRange{Start: "-1h", End: "now", TimestampType: "server"}}, true},
		{"replay open end", hlsURLOptions{Stream: s, PlaybackMode: "LIVE_REPLAY", Range: fragmentRange{Start: "-1h", TimestampType: "producer"}}, true},
		{"expires and max", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", Expires: 43200, MaxFragments: 5000, Range: fragmentRange{TimestampType: "server"}}, true},
		{"no stream", hlsURLOptions{PlaybackMode: "LIVE", Range: fragmentRange{TimestampType: "server"}}, false},
		{"live with start", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", Range: fragmentRange{Start: "-1h", TimestampType: "server"}}, false},
		{"replay without start", hlsURLOptions{Stream: s, PlaybackMode: "LIVE_REPLAY", Range: fragmentRange{TimestampType: "server"}}, false},
		{"on demand without end", hlsURLOptions{Stream: s, PlaybackMode: "ON_DEMAND", Range: fragmentRange{Start: "-1h", TimestampType: "server"}}, false},
		{"bad mode", hlsURLOptions{Stream: s, PlaybackMode: "DVR", Range: fragmentRange{TimestampType: "server"}}, false},
		{"expires too short", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", Expires: 299, Range: fragmentRange{TimestampType: "server"}}, false},
		{"max too large", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", MaxFragments: 5001, Range: fragmentRange{TimestampType: "server"}}, false},
		{"MPEG_TS", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", ContainerFormat: "mpeg_ts", Range: fragmentRange{TimestampType: "server"}}, true},
		{"bad container", hlsURLOptions{Stream: s, PlaybackMode: "LIVE", ContainerFormat: "MP4", Range: fragmentRange{TimestampType: "server"}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.o.validate(); (err == nil) != tc.ok {
				t.Errorf("validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestE2EGetClipAndHLS puts a clip in with put-media, downloads it with get-clip and plays the
// hls-url answers (ON_DEMAND and LIVE) with ffprobe/ffmpeg.
func TestE2EGetClipAndHLS(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffprobe")
	url, st := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", filepath.Join("..", "testdata", "h264_aac.mp4"),
		"--create", "--fragment-duration", "1s")
	// ffprobe decodes 188 audio frames from the MP4, whose edit list skips the AAC priming frame;
	// fragmented MP4 has no per-sample discard ffmpeg applies, so it decodes all 189 here (see
	// TestE2EAACPriming).
	want := probe{Frames: map[string]int{"video:h264": 100, "audio:aac": 189}, Duration: 4}

	clip := filepath.Join(t.TempDir(), "clip.mp4")
	mustRun(t, url, nil, "get-clip", "--stream-name", "cam", "--start", "-1h", "--end", "now", "-o", clip)
	sameMedia(t, "get-clip", ffprobe(t, clip), want)
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	if out, err := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", clip, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("ffmpeg decode of the clip: %v\n%s", err, out)
	}

	hls := strings.TrimSpace(mustRun(t, url, nil, "hls-url", "--stream-name", "cam", "--playback-mode", "ON_DEMAND",
		"--start", "-1h", "--end", "now", "--expires", "600"))
	if !strings.HasPrefix(hls, url+"/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=") {
		t.Fatalf("hls-url printed %q", hls)
	}
	got := ffprobe(t, hls)
	got.Duration = want.Duration // an HLS input has no container duration worth comparing
	sameMedia(t, "hls-url ON_DEMAND", got, want)

	// --container-format MPEG_TS: the same frames in transport stream segments.
	ts := strings.TrimSpace(mustRun(t, url, nil, "hls-url", "--stream-name", "cam", "--playback-mode", "ON_DEMAND",
		"--start", "-1h", "--end", "now", "--container-format", "MPEG_TS"))
	got = ffprobe(t, ts)
	got.Duration = want.Duration
	sameMedia(t, "hls-url ON_DEMAND MPEG_TS", got, want)

	// dash-url: the same media through an MPEG-DASH manifest, one adaptation set per track.
	dash := strings.TrimSpace(mustRun(t, url, nil, "dash-url", "--stream-name", "cam", "--playback-mode", "ON_DEMAND",
		"--start", "-1h", "--end", "now", "--max-fragments", "100"))
	if !strings.HasPrefix(dash, url+"/dash/v1/getDASHManifest.mpd?SessionToken=") {
		t.Fatalf("dash-url printed %q", dash)
	}
	// The presentation starts at the first fragment's timestamp (its first video frame), so the
	// AAC priming frame before it is not presented: 188, as from the MP4 with its edit list.
	got = ffprobe(t, dash)
	got.Duration = want.Duration
	sameMedia(t, "dash-url ON_DEMAND", got, probe{Frames: map[string]int{"video:h264": 100, "audio:aac": 188}, Duration: want.Duration})

	// LIVE: ffmpeg starts 3 fragments before the live edge; 2 s of them decode cleanly (asking
	// for more than the window holds, ffmpeg would wait for the producer to send more).
	live := strings.TrimSpace(mustRun(t, url, nil, "hls-url", "--stream-name", "cam"))
	player := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", live, "-t", "2", "-f", "null", "-")
	testutil.DieWithTest(player) // a live URL: it would outlive a test binary that died
	if out, err := player.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("ffmpeg on the LIVE URL: %v\n%s", err, out)
	}

	// Errors: unknown stream → exit 3; a bad flag → exit 2. The store is not changed.
	before, _ := st.ListStreams(t.Context())
	if code, _, _ := kvsRun(t.Context(), t, url, nil, "get-clip", "--stream-name", "nope", "--start", "-1h", "--end", "now", "-o", filepath.Join(t.TempDir(), "x.mp4")); code != ExitNotFound {
		t.Errorf("get-clip of an unknown stream: exit %d, want %d", code, ExitNotFound)
	}
	if code, _, _ := kvsRun(t.Context(), t, url, nil, "hls-url", "--stream-name", "nope"); code != ExitNotFound {
		t.Errorf("hls-url of an unknown stream: exit %d, want %d", code, ExitNotFound)
	}
	if code, _, _ := kvsRun(t.Context(), t, url, nil, "hls-url", "--stream-name", "cam", "--expires", "10"); code != ExitUsage {
		t.Errorf("hls-url --expires 10: exit %d, want %d", code, ExitUsage)
	}
	after, _ := st.ListStreams(t.Context())
	if len(before) != len(after) {
		t.Errorf("streams changed: %d → %d", len(before), len(after))
	}
}

// TestE2EGetClipMediaChange: the API reference says that GetClip returns an error when the codec
// private data or the tracks change within the queried media. A stream whose picture size changes
// mid-way (two resolutions concatenated as Annex B, one put-media) is
// InvalidCodecPrivateDataException, one whose audio appears (a second put-media, with AAC) is
// UnsupportedStreamMediaTypeException, both before any byte of a clip; each side of the change on
// its own is a whole clip. kvs answered 200 with the clip cut at the change (50 of 100 frames).
func TestE2EGetClipMediaChange(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg and ffprobe
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	dir := t.TempDir()
	var annexB []byte
	for _, size := range []string{"160x120", "320x240"} {
		out := filepath.Join(dir, size+".h264")
		cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size="+size+":rate=25", "-t", "2",
			"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "0", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v: %s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		annexB = append(annexB, b...)
	}
	src := filepath.Join(dir, "two-sizes.h264")
	if err := os.WriteFile(src, annexB, 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "sizes", "--create", "--source", src, "--fragment-duration", "1s")
	mustRun(t, url, nil, "put-media", "--stream-name", "audio", "--create", "--source", filepath.Join("..", "testdata", "h264.mkv"), "--fragment-duration", "1s")
	mustRun(t, url, nil, "put-media", "--stream-name", "audio", "--source", filepath.Join("..", "testdata", "h264_aac.mkv"), "--fragment-duration", "1s")

	for _, tc := range []struct{ stream, want string }{
		{"sizes", "InvalidCodecPrivateDataException"},
		{"audio", "UnsupportedStreamMediaTypeException"},
	} {
		clip := filepath.Join(dir, tc.stream+".mp4")
		code, _, stderr := kvsRun(t.Context(), t, url, nil, "get-clip", "--stream-name", tc.stream, "--start", "-1h", "--end", "+1h", "-o", clip)
		if code == ExitOK || !strings.Contains(stderr, tc.want) {
			got := "no file"
			if _, err := os.Stat(clip); err == nil {
				got = fmt.Sprint(ffprobe(t, clip).Frames)
			}
			t.Errorf("get-clip of %s: exit %d (%s), stderr %q; want %s", tc.stream, code, got, lastLine(stderr), tc.want)
		}
	}

	// Each side of the change on its own: the fragments before the 320x240 ones, then those.
	var list struct{ Fragments []fragmentOutput }
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", "sizes", "--timestamp-type", "producer",
		"--start", "-1h", "--end", "+1h")), &list); err != nil || len(list.Fragments) != 4 {
		t.Fatalf("%d fragments (%v), want 4", len(list.Fragments), err)
	}
	var times []time.Time
	for _, f := range list.Fragments {
		ts, err := time.Parse(time.RFC3339Nano, f.ProducerTimestamp)
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, ts)
	}
	slices.SortFunc(times, time.Time.Compare)
	for i, r := range [][2]time.Time{{times[0], times[1]}, {times[2], times[3]}} {
		clip := filepath.Join(dir, fmt.Sprintf("side%d.mp4", i))
		mustRun(t, url, nil, "get-clip", "--stream-name", "sizes", "--timestamp-type", "producer",
			"--start", r[0].Format(time.RFC3339Nano), "--end", r[1].Format(time.RFC3339Nano), "-o", clip)
		if got := ffprobe(t, clip).Frames; fmt.Sprint(got) != "map[video:h264:50]" {
			t.Errorf("get-clip of side %d: %v frames, want 50", i, got)
		}
	}
}

// TestE2EHLSMasterCoversEverySegment: the master playlist's CODECS and RESOLUTION cover every
// segment its media playlists list (RFC 8216 §4.3.4.2), not the newest fragment's alone. A camera
// whose picture size changed mid-stream (Annex B through put-media: 320x240, High 1.3, then
// 160x120, High 1.1) was announced as avc1.64000B at 160x120 though its first segments are
// avc1.64000D at 320x240; one whose audio stopped (a producer restarted without it) lost mp4a,
// and a player that sizes its buffers by CODECS (hls.js) made no audio buffer.
func TestE2EHLSMasterCoversEverySegment(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg and ffprobe
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	dir := t.TempDir()
	encode := func(name string, args ...string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		args = append(append([]string{"-nostdin", "-v", "error"}, args...), "-c:v", "libx264", "-preset", "veryfast",
			"-profile:v", "high", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-t", "2", out)
		if b, err := exec.CommandContext(t.Context(), ffmpeg, args...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %s: %v: %s", name, err, b)
		}
		return out
	}
	big := encode("big.h264", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25")
	small := encode("small.h264", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25")
	var annexB []byte
	for _, p := range []string{big, small} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		annexB = append(annexB, b...)
	}
	resized := filepath.Join(dir, "resized.h264")
	if err := os.WriteFile(resized, annexB, 0o644); err != nil {
		t.Fatal(err)
	}
	withAudio := encode("av.mkv", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac", "-b:a", "64k", "-ac", "1")
	videoOnly := encode("v.mkv", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25")

	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "resized", "--create", "--source", resized, "--fragment-duration", "1s")
	mustRun(t, url, nil, "put-media", "--stream-name", "mute", "--create", "--source", withAudio, "--fragment-duration", "1s")
	mustRun(t, url, nil, "put-media", "--stream-name", "mute", "--source", videoOnly, "--fragment-duration", "1s")

	variant := regexp.MustCompile(`(?m)^#EXT-X-STREAM-INF:BANDWIDTH=\d+,(CODECS="[^"]*",RESOLUTION=\d+x\d+)$`)
	for _, tc := range []struct {
		name   string
		args   []string
		want   string
		frames map[string]int
	}{
		{"resized ON_DEMAND", []string{"--stream-name", "resized", "--playback-mode", "ON_DEMAND", "--start", "-1h", "--end", "now"},
			`CODECS="avc1.64000D,avc1.64000B",RESOLUTION=320x240`, map[string]int{"video:h264": 100}},
		// The replay's first window is the 320x240 part: the range holds the rest.
		{"resized LIVE_REPLAY", []string{"--stream-name", "resized", "--playback-mode", "LIVE_REPLAY", "--start", "-1h", "--max-fragments", "2"},
			`CODECS="avc1.64000D,avc1.64000B",RESOLUTION=320x240`, nil},
		{"audio stopped ON_DEMAND", []string{"--stream-name", "mute", "--playback-mode", "ON_DEMAND", "--start", "-1h", "--end", "now"},
			`CODECS="avc1.64000D,mp4a.40.2",RESOLUTION=320x240`, nil},
	} {
		hls := strings.TrimSpace(mustRun(t, url, nil, append([]string{"hls-url", "--expires", "600"}, tc.args...)...))
		code, body := httpBody(t, hls)
		m := variant.FindStringSubmatch(body)
		if code != 200 || m == nil || m[1] != tc.want {
			t.Errorf("%s: master playlist (%d):\n%s\nwant %s", tc.name, code, body, tc.want)
		}
		if tc.frames != nil {
			got := ffprobe(t, hls)
			if fmt.Sprint(got.Frames) != fmt.Sprint(tc.frames) || got.VideoSize != "320,240" {
				t.Errorf("%s: ffprobe of the playlist: %v frames, picture %s; want %v, 320,240", tc.name, got.Frames, got.VideoSize, tc.frames)
			}
		}
		if tc.name != "resized LIVE_REPLAY" { // ffmpeg would follow the replay in real time
			player := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", hls, "-f", "null", "-")
			if out, err := player.CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("%s: ffmpeg decode of the playlist: %v\n%s", tc.name, err, out)
			}
		}
	}
}

// httpBody GETs url and returns the status and body.
func httpBody(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestE2EGetClipCut: a range with more fragments than one clip holds (server.MaxClipFragments)
// downloads the first 200 and says so on stderr, with the --start that fetches the rest, and
// exits 0; that --start gives the rest, with no such line. 225 one-frame fragments (every frame
// a keyframe, 25 fps, --fragment-duration shorter than a frame). The clips are selected by
// producer timestamp, 40 ms apart; the server timestamps of a fast upload may share a
// millisecond, where an inclusive --start cannot tell fragments apart.
func TestE2EGetClipCut(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg and ffprobe
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	dir := t.TempDir()
	src := filepath.Join(dir, "intra.h264")
	const frames = server.MaxClipFragments + 25
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", strconv.Itoa(frames),
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "1", src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--create", "--source", src, "--fragment-duration", "10ms")

	clip := filepath.Join(dir, "clip.mp4")
	code, _, stderr := kvsRun(t.Context(), t, url, nil, "get-clip", "--stream-name", "cam", "--timestamp-type", "producer",
		"--start", "-1h", "--end", "+1h", "-o", clip)
	if code != ExitOK {
		t.Fatalf("get-clip: exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`(?m)^kvs get-clip: the clip holds the first 200 of 225 fragments \(to (\S+)\); for the rest run again with --start (\S+)$`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("get-clip stderr has no line about the fragments left out:\n%s", stderr)
	}
	if got := ffprobe(t, clip).Frames["video:h264"]; got != server.MaxClipFragments {
		t.Errorf("clip: %d frames, want %d", got, server.MaxClipFragments)
	}
	if m[1] != m[2] {
		t.Errorf("the clip ends at %s, the rest starts at %s: one-frame fragments follow each other", m[1], m[2])
	}

	rest := filepath.Join(dir, "rest.mp4")
	code, _, stderr = kvsRun(t.Context(), t, url, nil, "get-clip", "--stream-name", "cam", "--timestamp-type", "producer",
		"--start", m[2], "--end", "+1h", "-o", rest)
	if code != ExitOK || strings.Contains(stderr, "the clip holds") {
		t.Fatalf("get-clip of the rest: exit %d:\n%s", code, stderr)
	}
	if got := ffprobe(t, rest).Frames["video:h264"]; got != frames-server.MaxClipFragments {
		t.Errorf("rest: %d frames, want %d", got, frames-server.MaxClipFragments)
	}
	// The same range by server timestamp is cut the same way (count only: see above).
	code, _, stderr = kvsRun(t.Context(), t, url, nil, "get-clip", "--stream-name", "cam", "--start", "-1h", "--end", "+1h", "-o", clip)
	if code != ExitOK || !strings.Contains(stderr, "kvs get-clip: the clip holds the first 200 of 225 fragments") {
		t.Errorf("get-clip by server timestamp: exit %d:\n%s", code, stderr)
	}
}

// TestClipCut: get-clip's copy of GetClip's rule (server/clip.go, clipFragments): the first
// server.MaxClipFragments by the selected timestamp, then number, cut where the sizes pass the
// byte cap, the first always kept.
func TestClipCut(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_800_000_000, 0)
	frags := func(n int, size int64) []client.FragmentInfo {
		var out []client.FragmentInfo
		for i := range n {
			// Listed newest first; producer timestamps run the other way round from server ones.
			j := n - 1 - i
			out = append(out, client.FragmentInfo{FragmentNumber: strconv.Itoa(1000 + j), SizeBytes: size,
				ServerTimestamp: t0.Add(time.Duration(j) * time.Second), ProducerTimestamp: t0.Add(-time.Duration(j) * time.Second)})
		}
		return out
	}
	cases := []struct {
		name     string
		frags    []client.FragmentInfo
		tt       client.TimestampType
		maxBytes int64
		kept     int
		rest     string // "" when the clip holds them all
	}{
		{"all fit", frags(server.MaxClipFragments, 1), client.ServerTimestamp, 1 << 20, server.MaxClipFragments, ""},
		{"one too many", frags(server.MaxClipFragments+1, 1), client.ServerTimestamp, 1 << 20, server.MaxClipFragments, "1200"},
		{"by producer time", frags(server.MaxClipFragments+1, 1), client.ProducerTimestamp, 1 << 20, server.MaxClipFragments, "1000"},
		{"bytes", frags(10, 100), client.ServerTimestamp, 250, 2, "1002"},
		{"bytes exactly", frags(10, 100), client.ServerTimestamp, 300, 3, "1003"},
		{"first over the cap", frags(3, 100), client.ServerTimestamp, 50, 1, "1001"},
		{"one fragment over the cap", frags(1, 100), client.ServerTimestamp, 50, 1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept, rest, ok := clipCut(tc.frags, tc.tt, tc.maxBytes)
			if len(kept) != tc.kept || ok != (tc.rest != "") || rest.FragmentNumber != tc.rest {
				t.Errorf("clipCut: %d kept, rest %q (%v); want %d, %q", len(kept), rest.FragmentNumber, ok, tc.kept, tc.rest)
			}
		})
	}
}
