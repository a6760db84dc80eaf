package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// uploadClip sends fragments idx of clip name (looped) to stream with ABSOLUTE timecodes from
// baseMillis, waits for every PERSISTED ack and ends the upload.
func uploadClip(t *testing.T, e *mediaEnv, stream, name string, idx ...int) *clip {
	t.Helper()
	c := loadClip(t, name)
	pc := e.startPut(t, stream)
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	for _, i := range idx {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	return c
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// onDemandHour is the body of an ON_DEMAND GetHLSStreamingSessionURL (selector
// "HLSFragmentSelector") or GetDASHStreamingSessionURL ("DASHFragmentSelector") request for
// stream over the hour of producer time from baseMillis.
func onDemandHour(stream, selector string) map[string]any {
	return map[string]any{"StreamName": stream, "PlaybackMode": "ON_DEMAND",
		selector: map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3600}}}
}

// hlsURL calls GetHLSStreamingSessionURL and returns the URL, or the error type.
func (e *mediaEnv) hlsURL(t *testing.T, body map[string]any) (string, string) {
	t.Helper()
	resp := e.post(t, t.Context(), "/getHLSStreamingSessionURL", body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", resp.Header.Get("x-amzn-ErrorType")
	}
	var out struct{ HLSStreamingSessionURL string }
	if err := json.Unmarshal(b, &out); err != nil || out.HLSStreamingSessionURL == "" {
		t.Fatalf("answer %s: %v", b, err)
	}
	return out.HLSStreamingSessionURL, ""
}

// httpOpen GETs url for the test; the caller closes the response's body.
func httpOpen(t *testing.T, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func httpGet(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp := httpOpen(t, url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

var uriPattern = regexp.MustCompile(`(?m)^(getHLSMediaPlaylist\.m3u8\?\S+)$`)

// mediaPlaylist fetches the master playlist at url and then its media playlist.
func mediaPlaylist(t *testing.T, url string) (master, media string) {
	t.Helper()
	code, hdr, b := httpGet(t, url)
	if code != 200 || hdr.Get("Content-Type") != "application/vnd.apple.mpegurl" {
		t.Fatalf("master playlist: %d %s %s", code, hdr.Get("Content-Type"), b)
	}
	m := uriPattern.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no media playlist in\n%s", b)
	}
	base := url[:strings.LastIndex(url, "/")+1]
	code, _, mb := httpGet(t, base+m[1])
	if code != 200 {
		t.Fatalf("media playlist: %d %s", code, mb)
	}
	return string(b), string(mb)
}

type hlsProbeStream struct {
	CodecType    string `json:"codec_type"`
	CodecName    string `json:"codec_name"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	NbReadFrames string `json:"nb_read_frames"`
}

func ffprobeStreams(t *testing.T, input string) []hlsProbeStream {
	t.Helper()
	p, err := runFFprobeStreams(t.Context(), testutil.NeedTool(t, "ffprobe"), input)
	if err != nil {
		t.Fatal(err)
	}
	if p.stderr != "" {
		t.Errorf("ffprobe %s reported:\n%s", input, p.stderr)
	}
	return p.streams
}

// probedStreams is ffprobe's answer: the streams, and what it said on stderr.
type probedStreams struct {
	streams []hlsProbeStream
	stderr  string
}

func runFFprobeStreams(ctx context.Context, bin, input string) (probedStreams, error) {
	cmd := exec.CommandContext(ctx, bin, "-v", "error", "-count_frames", "-show_streams", "-of", "json", input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return probedStreams{}, fmt.Errorf("ffprobe %s: %w\n%s", input, err, stderr.String())
	}
	var res struct{ Streams []hlsProbeStream }
	if err := json.Unmarshal(out, &res); err != nil {
		return probedStreams{}, fmt.Errorf("ffprobe %s: %w", input, err)
	}
	return probedStreams{res.Streams, stderr.String()}, nil
}

// sourceProbes holds ffprobe's report of each testdata clip, by name: a dozen tests, most of
// them parallel, compare with the same few clips, and an ffprobe run's CPU goes
// mostly into starting it. The first test to ask probes; the others wait for its answer.
var sourceProbes testutil.Memo[string, probedStreams]

// wantStreams is what ffprobe reports for n loops of the source clip.
func wantStreams(t *testing.T, name string, loops int) []hlsProbeStream {
	t.Helper()
	path := filepath.Join("..", "testdata", name)
	bin := testutil.NeedTool(t, "ffprobe")
	p, err := sourceProbes.Get(name, func() (probedStreams, error) { return runFFprobeStreams(t.Context(), bin, path) })
	if err != nil {
		t.Fatal(err)
	}
	if p.stderr != "" {
		t.Errorf("ffprobe %s reported:\n%s", path, p.stderr)
	}
	src := slices.Clone(p.streams)
	for i := range src {
		var n int
		fmt.Sscan(src[i].NbReadFrames, &n)
		src[i].NbReadFrames = fmt.Sprint(n * loops)
	}
	return src
}

func TestHLSOnDemandFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	for _, name := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv"} {
		t.Run(name, func(t *testing.T) {
			e := newMediaEnv(t, "mem")
			e.createStream(t, "cam", 24)
			c := loadClip(t, name)
			uploadClip(t, e, "cam", name, seq(len(c.frags))...)
			url, code := e.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
			if code != "" {
				t.Fatal(code)
			}
			if !strings.HasPrefix(url, e.ts.URL+"/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=") {
				t.Errorf("url %s", url)
			}
			master, media := mediaPlaylist(t, url)
			if !strings.Contains(master, `RESOLUTION=320x240`) || !strings.Contains(master, `CODECS="`) {
				t.Errorf("master playlist:\n%s", master)
			}
			if strings.Count(media, "#EXTINF:") != len(c.frags) || !strings.Contains(media, "#EXT-X-ENDLIST") ||
				strings.Contains(media, "#EXT-X-DISCONTINUITY\n") || !strings.Contains(media, "#EXT-X-PLAYLIST-TYPE:VOD") {
				t.Errorf("media playlist:\n%s", media)
			}
			got := ffprobeStreams(t, url)
			want := wantStreams(t, name, 1)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ffprobe of the HLS URL:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestHLSDiscontinuity drops a fragment: the playlist marks the gap, and ffprobe still reads
// every frame sent.
func TestHLSDiscontinuity(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1, 3)
	url, code := e.hlsURL(t, map[string]any{
		"StreamName":               "cam",
		"PlaybackMode":             "ON_DEMAND",
		"DisplayFragmentTimestamp": "ALWAYS",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	if n := strings.Count(media, "#EXT-X-DISCONTINUITY\n"); n != 1 {
		t.Errorf("%d discontinuities, want 1:\n%s", n, media)
	}
	if n := strings.Count(media, "#EXT-X-PROGRAM-DATE-TIME:"); n != 3 {
		t.Errorf("%d program date times, want 3", n)
	}
	got := ffprobeStreams(t, url)
	if len(got) != 1 || got[0].NbReadFrames != "75" {
		t.Errorf("ffprobe: %+v, want 75 frames", got)
	}
}

// TestHLSLive follows a producer: the playlist is a window of the newest fragments that slides
// as fragments arrive, and ffmpeg plays the live URL while the producer sends.
func TestHLSLive(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	pc, c, base := startLive(t, e)
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "MaxMediaPlaylistFragmentResults": 3})
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	if strings.Count(media, "#EXTINF:") != 2 || strings.Contains(media, "#EXT-X-ENDLIST") ||
		!strings.Contains(media, "#EXT-X-MEDIA-SEQUENCE:1\n") {
		t.Fatalf("first media playlist:\n%s", media)
	}
	for i := 2; i < 6; i++ {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	_, media = mediaPlaylist(t, url)
	if strings.Count(media, "#EXTINF:") != 3 || !strings.Contains(media, "#EXT-X-MEDIA-SEQUENCE:4\n") ||
		!strings.Contains(media, "FragmentNumber="+formatFragmentNumber(6)) {
		t.Fatalf("media playlist after 6 fragments:\n%s", media)
	}

	// ffmpeg plays the live URL while the producer keeps sending a fragment a second. It starts
	// near the live edge (the window holds 3 s) and reads faster than real time, so 7 s of
	// media need fragments produced while it plays, found by reloading the playlist.
	if sent := playLive(t, url, pc, c, base, 6); sent < 10 {
		t.Errorf("only %d fragments were produced while ffmpeg played 7 s", sent)
	}
}

// startLive starts an upload of h264.mkv to stream cam of e with producer timestamps from 10 s
// ago (a live player compares them with its clock) and sends its first two fragments.
func startLive(t *testing.T, e *mediaEnv) (pc *putConn, c *clip, base int64) {
	t.Helper()
	e.createStream(t, "cam", 24)
	c = loadClip(t, "h264.mkv")
	pc = e.startPut(t, "cam")
	pc.write(c.header())
	base = time.Now().Add(-10 * time.Second).UnixMilli()
	for i := range 2 {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	return pc, c, base
}

// playLive has ffmpeg play 7 s of the live url while pc sends a fragment of c a second from
// fragment from on, checks the frames it decoded, and returns the index the producer reached.
func playLive(t *testing.T, url string, pc *putConn, c *clip, base int64, from int) int {
	t.Helper()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	produced := produceLive(ctx, pc, c, base, from)
	// framecrc prints one line per decoded frame: 7 s of the 25 fps source are 175 frame slots. The
	// looped clip leaves a 60 ms hole in producer time at every loop (1.5 frame slots), and 7 s hold
	// one or two loop boundaries, so 171-176 frames come out when nothing is lost or repeated.
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", url, "-t", "7", "-f", "framecrc", "-")
	testutil.DieWithTest(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	cancel()
	sent := <-produced
	if err != nil || stderr.Len() > 0 {
		t.Errorf("ffmpeg on the live URL: %v\n%s", err, stderr.String())
	}
	if frames := strings.Count("\n"+string(out), "\n0,"); frames < 171 || frames > 176 {
		t.Errorf("ffmpeg decoded %d frames from 7 s of the live URL, want 171-176 (25 fps less loop holes)", frames)
	}
	return sent
}

// produceLive sends clip c's fragments from n on (looped), one a second, with producer times
// from base, until ctx ends or a write fails; the channel then gives the next fragment's index.
func produceLive(ctx context.Context, pc *putConn, c *clip, base int64, n int) <-chan int {
	produced := make(chan int, 1)
	go func() {
		defer func() { produced <- n }()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				b, err := c.appendCluster(nil, n, base)
				if err != nil {
					return
				}
				if _, err := pc.pw.Write(b); err != nil {
					return
				}
				n++
			}
		}
	}()
	return produced
}

// TestPlaybackURLsAWSCLI gets an HLS (fMP4 and, with --container-format, MPEG_TS) and a DASH URL
// with the real AWS CLI and plays them with ffprobe.
func TestPlaybackURLsAWSCLI(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	e := newMediaEnv(t, "fs")
	cli := testutil.NewAWSCLI(t, e.ts.URL)
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264_aac.mkv", seq(4)...)
	sel := fmt.Sprintf("FragmentSelectorType=PRODUCER_TIMESTAMP,TimestampRange={StartTimestamp=%d,EndTimestamp=%d}",
		baseMillis/1000, baseMillis/1000+60)
	var res struct{ HLSStreamingSessionURL string }
	cli.OK(&res, "kinesis-video-archived-media", "get-hls-streaming-session-url", "--stream-name", "cam",
		"--playback-mode", "ON_DEMAND", "--hls-fragment-selector", sel, "--expires", "3600")
	got := ffprobeStreams(t, res.HLSStreamingSessionURL)
	if want := wantStreams(t, "h264_aac.mkv", 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ffprobe:\n got %+v\nwant %+v", got, want)
	}
	// MPEG_TS was InvalidArgumentException ("ContainerFormat MPEG_TS is not supported by kvs").
	cli.OK(&res, "kinesis-video-archived-media", "get-hls-streaming-session-url", "--stream-name", "cam",
		"--playback-mode", "ON_DEMAND", "--hls-fragment-selector", sel, "--container-format", "MPEG_TS")
	if _, media := mediaPlaylist(t, res.HLSStreamingSessionURL); strings.Count(media, "getTSFragment.ts?") != 4 {
		t.Errorf("MPEG_TS media playlist:\n%s", media)
	}
	got = ffprobeStreams(t, res.HLSStreamingSessionURL)
	if want := wantStreams(t, "h264_aac.mkv", 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ffprobe of the MPEG_TS session:\n got %+v\nwant %+v", got, want)
	}

	var dash struct{ DASHStreamingSessionURL string }
	cli.OK(&dash, "kinesis-video-archived-media", "get-dash-streaming-session-url", "--stream-name", "cam",
		"--playback-mode", "ON_DEMAND", "--dash-fragment-selector", sel, "--display-fragment-number", "ALWAYS",
		"--max-manifest-fragment-results", "4")
	m, raw := manifest(t, dash.DASHStreamingSessionURL)
	if s := m.Periods[0].Sets[0].Rep.List.S; len(s) != 4 || s[3].FN != formatFragmentNumber(4) {
		t.Errorf("want 4 segments with their fragment numbers:\n%s", raw)
	}
	want := wantStreams(t, "h264_aac.mkv", 1)
	if got := ffprobeStreams(t, dash.DASHStreamingSessionURL); len(got) != 2 || got[0] != want[0] {
		t.Errorf("ffprobe of the DASH URL: %+v, want the clip's video, %+v, and its audio", got, want[0])
	}
}

// TestHLSReplayFromFarPast: a LIVE_REPLAY session whose StartTimestamp is before 1678 (the AWS
// CLI sends StartTimestamp=1600-01-01T00:00:00Z as -11676096000) plays from the stream's first
// fragment. The session token kept the start as UnixNano, which wrapped around to 2184: the
// media playlist was ResourceNotFoundException ("No fragments found").
func TestHLSReplayFromFarPast(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(3)...)
	for _, typ := range []string{"PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"} {
		url, errTyp := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
			"HLSFragmentSelector": map[string]any{"FragmentSelectorType": typ,
				"TimestampRange": map[string]any{"StartTimestamp": -11676096000}}})
		if errTyp != "" {
			t.Fatalf("%s: %s", typ, errTyp)
		}
		_, media := mediaPlaylist(t, url)
		if n := strings.Count(media, "#EXTINF:"); n != 3 {
			t.Errorf("%s from 1600: %d fragments in the media playlist, want 3:\n%s", typ, n, media)
		}
	}
}

func TestGetHLSStreamingSessionURLErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	e.createStream(t, "empty", 24)
	e.createStream(t, "live-only", 0)
	uploadClip(t, e, "cam", "h264.mkv", seq(4)...)
	rng := map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
		"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 60}}
	tests := []struct {
		name string
		body map[string]any
		want string
	}{
		{"no stream", map[string]any{}, "InvalidArgumentException"},
		{"unknown stream", map[string]any{"StreamName": "nope"}, "ResourceNotFoundException"},
		{"retention 0", map[string]any{"StreamName": "live-only"}, "NoDataRetentionException"},
		{"bad mode", map[string]any{"StreamName": "cam", "PlaybackMode": "LATER"}, "InvalidArgumentException"},
		{"MPEG_TS", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng, "ContainerFormat": "MPEG_TS"}, ""},
		{"live with range", map[string]any{"StreamName": "cam", "HLSFragmentSelector": rng}, "InvalidArgumentException"},
		{"on demand without range", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND"}, "InvalidArgumentException"},
		{"expires too short", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng, "Expires": 299}, "InvalidArgumentException"},
		{"expires too long", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng, "Expires": 43201}, "InvalidArgumentException"},
		{"max results 0", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng, "MaxMediaPlaylistFragmentResults": 0}, "InvalidArgumentException"},
		{"bad discontinuity mode", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng, "DiscontinuityMode": "SOMETIMES"}, "InvalidArgumentException"},
		{"range with no data", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": 1e9, "EndTimestamp": 1e9 + 60}}}, "ResourceNotFoundException"},
		{"live without fragments", map[string]any{"StreamName": "empty"}, "ResourceNotFoundException"},
		{"live, fragments too old", map[string]any{"StreamName": "cam"}, ""}, // server timestamps are now
		{"ok", map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY", "HLSFragmentSelector": rng}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, code := e.hlsURL(t, tc.body); code != tc.want {
				t.Errorf("error %q, want %q", code, tc.want)
			}
		})
	}
	// Ten sessions per stream (three were made above).
	for i := 0; i < 7; i++ {
		if _, code := e.hlsURL(t, map[string]any{"StreamName": "cam"}); code != "" {
			t.Fatalf("session %d: %s", i+4, code)
		}
	}
	if _, code := e.hlsURL(t, map[string]any{"StreamName": "cam"}); code != "ClientLimitExceededException" {
		t.Errorf("11th session: %q, want ClientLimitExceededException", code)
	}
	// Playback URLs with a bad token, and POST-only operations under GET.
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=nope", 404},
		{"/hls/v1/getHLSMasterPlaylist.m3u8", 400},
		{"/hls/v1/getMP4MediaFragment.mp4?SessionToken=nope&FragmentNumber=1", 404},
		{"/getClip", 405},
		{"/hls/v1/unknown", 404},
	} {
		if code, _, b := httpGet(t, e.ts.URL+tc.path); code != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.path, code, b, tc.code)
		}
	}
}

func TestHLSUnsupportedCodec(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "vp8", 24)
	uploadClip(t, e, "vp8", "webm_vp8.webm", 0)
	_, code := e.hlsURL(t, map[string]any{"StreamName": "vp8"})
	if code != "UnsupportedStreamMediaTypeException" {
		t.Errorf("VP8: %q, want UnsupportedStreamMediaTypeException", code)
	}
	resp := e.post(t, t.Context(), "/getClip", map[string]any{"StreamName": "vp8", "ClipFragmentSelector": map[string]any{
		"FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}}})
	resp.Body.Close()
	if got := resp.Header.Get("x-amzn-ErrorType"); got != "UnsupportedStreamMediaTypeException" {
		t.Errorf("GetClip of VP8: %q, want UnsupportedStreamMediaTypeException", got)
	}
}

func TestGetClip(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	for _, name := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv"} {
		t.Run(name, func(t *testing.T) {
			e := newMediaEnv(t, "fs")
			e.createStream(t, "cam", 24)
			c := loadClip(t, name)
			uploadClip(t, e, "cam", name, seq(2*len(c.frags))...) // the clip twice
			resp := e.post(t, t.Context(), "/getClip", map[string]any{"StreamName": "cam", "ClipFragmentSelector": map[string]any{
				"FragmentSelectorType": "PRODUCER_TIMESTAMP",
				"TimestampRange":       map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3600}}})
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/mp4" {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			out := filepath.Join(t.TempDir(), "clip.mp4")
			fh, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(fh, resp.Body); err != nil {
				t.Fatal(err)
			}
			fh.Close()
			if got, want := ffprobeStreams(t, out), wantStreams(t, name, 2); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ffprobe:\n got %+v\nwant %+v", got, want)
			}
			ffmpeg := testutil.NeedTool(t, "ffmpeg")
			if b, err := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", out, "-f", "null", "-").CombinedOutput(); err != nil || len(b) > 0 {
				t.Errorf("ffmpeg: %v\n%s", err, b)
			}
		})
	}
}

func TestGetClipErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	e.createStream(t, "live-only", 0)
	uploadClip(t, e, "cam", "h264.mkv", 0)
	sel := func(typ string, start, end float64) map[string]any {
		return map[string]any{"FragmentSelectorType": typ, "TimestampRange": map[string]any{"StartTimestamp": start, "EndTimestamp": end}}
	}
	now := float64(baseMillis / 1000)
	tests := []struct {
		name string
		body map[string]any
		want string
	}{
		{"no selector", map[string]any{"StreamName": "cam"}, "InvalidArgumentException"},
		{"bad type", map[string]any{"StreamName": "cam", "ClipFragmentSelector": sel("NOW", now, now+1)}, "InvalidArgumentException"},
		{"end before start", map[string]any{"StreamName": "cam", "ClipFragmentSelector": sel("PRODUCER_TIMESTAMP", now, now-1)}, "InvalidArgumentException"},
		{"over 24 h", map[string]any{"StreamName": "cam", "ClipFragmentSelector": sel("PRODUCER_TIMESTAMP", now, now+86401)}, "InvalidArgumentException"},
		{"unknown stream", map[string]any{"StreamName": "nope", "ClipFragmentSelector": sel("PRODUCER_TIMESTAMP", now, now+1)}, "ResourceNotFoundException"},
		{"retention 0", map[string]any{"StreamName": "live-only", "ClipFragmentSelector": sel("PRODUCER_TIMESTAMP", now, now+1)}, "NoDataRetentionException"},
		{"no data", map[string]any{"StreamName": "cam", "ClipFragmentSelector": sel("PRODUCER_TIMESTAMP", now-100, now-1)}, "ResourceNotFoundException"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.post(t, t.Context(), "/getClip", tc.body)
			resp.Body.Close()
			if got := resp.Header.Get("x-amzn-ErrorType"); got != tc.want {
				t.Errorf("%d %q, want %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}

// TestHLSSessionAnyNode: a session token carries its session, signed, so another server with the
// same key (another node of a cluster, or this one after a restart) serves it, with the same
// playlist, discontinuity count included, derived from the store; a server with another key, or
// a token changed by a byte, gets ResourceNotFoundException.
func TestHLSSessionAnyNode(t *testing.T) {
	t.Parallel()
	st := store.NewMem()
	t.Cleanup(func() { st.Close() })
	key := []byte("a shared session key, 32 bytes!!")
	node := func(k []byte) *mediaEnv {
		srv, err := New(Config{Store: st, SessionKey: k})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		t.Cleanup(func() { ts.Close(); srv.Close() })
		return &mediaEnv{srv: srv, ts: ts, store: st}
	}
	a, b, c3 := node(key), node(key), node([]byte("another key, at least 16 bytes"))
	aURL, bURL, cURL := a.ts.URL, b.ts.URL, c3.ts.URL
	a.createStream(t, "cam", 24)

	c := loadClip(t, "h264.mkv")
	pc := a.startPut(t, "cam")
	pc.write(c.header())
	for _, i := range []int{0, 1} {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	url, code := a.hlsURL(t, map[string]any{"StreamName": "cam", "MaxMediaPlaylistFragmentResults": 2})
	if code != "" {
		t.Fatal(code)
	}
	// A gap in producer time before fragment 3 (clip fragment 2 left out): a discontinuity,
	// which slides out of the 2-fragment window once fragments 4 and 5 are in.
	for _, i := range []int{3, 4, 5} {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	_, onA := mediaPlaylist(t, url)
	if !strings.Contains(onA, "#EXT-X-DISCONTINUITY-SEQUENCE:1\n") || !strings.Contains(onA, "#EXT-X-MEDIA-SEQUENCE:4\n") {
		t.Fatalf("playlist on the node that made the session:\n%s", onA)
	}
	_, onB := mediaPlaylist(t, strings.Replace(url, aURL, bURL, 1))
	if onB != onA {
		t.Fatalf("another node with the key answers\n%s\nwant the same as the first node:\n%s", onB, onA)
	}
	// The media of the session, from either node: the same bytes.
	base := url[:strings.LastIndex(url, "/")+1]
	for _, m := range regexp.MustCompile(`getMP4\w+\.mp4\?[^"\n]+`).FindAllString(onA, -1) {
		codeA, _, fromA := httpGet(t, base+m)
		codeB, _, fromB := httpGet(t, strings.Replace(base, aURL, bURL, 1)+m)
		if codeA != 200 || codeB != 200 || len(fromA) < 500 || !bytes.Equal(fromA, fromB) {
			t.Errorf("%s: %d (%d bytes) on the first node, %d (%d bytes) on the other", m, codeA, len(fromA), codeB, len(fromB))
		}
	}

	tok := url[strings.Index(url, "SessionToken=")+len("SessionToken="):]
	forged := []byte(tok)
	forged[5] ^= 1 // still base64url: the payload, not the signature, changes
	for name, u := range map[string]string{
		"other key":    strings.Replace(url, aURL, cURL, 1),
		"forged token": strings.Replace(url, tok, string(forged), 1),
		"no signature": strings.Replace(url, tok, tok[:strings.Index(tok, ".")], 1),
	} {
		code, hdr, body := httpGet(t, u)
		if code != 404 || hdr.Get("x-amzn-ErrorType") != "ResourceNotFoundException" {
			t.Errorf("%s: %d %s %s, want 404 ResourceNotFoundException", name, code, hdr.Get("x-amzn-ErrorType"), body)
		}
	}
}

// TestHLSSessionServesItsFragmentsOnly: "the media that is made available through the playlist
// consists only of the requested stream, time range, and format" (GetHLSStreamingSessionURL). A
// session's media URLs name fragments by number, which a holder of the session URL can change:
// a fragment outside the session (before its range or after it, or before a LIVE session began)
// is ResourceNotFoundException, from the HLS and the DASH endpoints, as for one that does not
// exist. It was served: a session for a few seconds opened the stream's whole archive.
func TestHLSSessionServesItsFragmentsOnly(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(4)...) // producer times 0, 1, 2, 3 s: numbers 1-4
	rng := map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
		"TimestampRange": map[string]any{"StartTimestamp": baseMillis/1000 + 0.5, "EndTimestamp": baseMillis/1000 + 2.5}}
	hls, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng})
	if code != "" {
		t.Fatal(code)
	}
	dash, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY", "DASHFragmentSelector": rng})
	if code != "" {
		t.Fatal(code)
	}
	live, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "MaxMediaPlaylistFragmentResults": 1}) // lists fragment 4
	if code != "" {
		t.Fatal(code)
	}
	for _, tc := range []struct {
		url  string
		in   []uint64 // fragments of the session
		out  []uint64
		name string
	}{
		{hls, []uint64{2, 3}, []uint64{1, 4}, "ON_DEMAND HLS"},
		{dash, []uint64{2, 3}, []uint64{1, 4}, "LIVE_REPLAY DASH"},
		{live, []uint64{4}, []uint64{1, 3}, "LIVE HLS"},
	} {
		base := tc.url[:strings.LastIndex(tc.url, "/")+1]
		tok := tc.url[strings.Index(tc.url, "SessionToken="):]
		for _, n := range append(tc.in, tc.out...) {
			want := 200
			if slices.Contains(tc.out, n) {
				want = 404
			}
			for _, op := range []string{"getMP4MediaFragment.mp4", "getMP4InitFragment.mp4"} {
				u := fmt.Sprintf("%s%s?%s&FragmentNumber=%s&TrackNumber=1", base, op, tok, formatFragmentNumber(n))
				code, hdr, body := httpGet(t, u)
				if code != want || want == 404 && hdr.Get("x-amzn-ErrorType") != "ResourceNotFoundException" {
					t.Errorf("%s: %s of fragment %d: %d %s %.80q, want %d", tc.name, op, n, code, hdr.Get("x-amzn-ErrorType"), body, want)
				}
			}
		}
	}
}

// TestPlaybackErrorsCrossOrigin: hls.js, dash.js and other players in a web page of another
// origin than kvs read the playback URLs' answers only when they carry
// Access-Control-Allow-Origin; an error without it is a network error with no status to the
// page, so a player cannot tell a 503 ("try again": a cluster's store did not answer, the
// server is shutting down) from a 404, and does not retry. Errors carry it, as answers do.
func TestPlaybackErrorsCrossOrigin(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(2)...)
	rng := map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
		"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 60}}
	hls, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": rng})
	if code != "" {
		t.Fatal(code)
	}
	dash, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "DASHFragmentSelector": rng})
	if code != "" {
		t.Fatal(code)
	}
	tok := func(u string) string { return u[strings.Index(u, "SessionToken="):] }
	for _, path := range []string{
		"/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=nope",
		"/hls/v1/getHLSMediaPlaylist.m3u8",
		"/hls/v1/getMP4MediaFragment.mp4?" + tok(hls) + "&FragmentNumber=" + formatFragmentNumber(99),
		"/dash/v1/getDASHManifest.mpd?SessionToken=nope",
		"/dash/v1/getMP4InitFragment.mp4?" + tok(dash) + "&FragmentNumber=" + formatFragmentNumber(1) + "&TrackNumber=7",
	} {
		code, hdr, body := httpGet(t, e.ts.URL+path)
		if code < 400 || hdr.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: %d %s, Access-Control-Allow-Origin %q, want an error with *", path[:min(len(path), 60)], code, body, hdr.Get("Access-Control-Allow-Origin"))
		}
	}
}

// A playlist's track keys (which fragments need a new init segment) are cached per node, 100,000
// of them, documented at ~100 B each: a key is a digest, not the tracks' text. A key held the
// tracks' CodecPrivate in hex, twice its size: a producer whose Tracks carry 600 kB of it (the
// parser takes Tracks up to 1 MiB) made each of its fragments cost 1.2 MB of cache once a
// playlist listed them, and one ON_DEMAND playlist of 5,000 such fragments 6 GB.
func TestHLSTrackKeysBounded(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	big := slices.Clone(c.tracks)
	big[0].CodecPrivate = append(slices.Clone(big[0].CodecPrivate), make([]byte, 600_000)...)
	header := func(tracks []mkv.Track) []byte {
		return mkv.AppendTracks(mkv.AppendInfo(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, c.docType)), c.scale, "test"), tracks)
	}
	const n = 10
	pc := e.startPut(t, "cam")
	pc.write(header(big))
	for i := range n {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.write(header(c.tracks)) // the last fragment is one a session can open on
	pc.fragment(c.cluster(t, n, baseMillis), c.fragTimecode(n, baseMillis), true)
	pc.end()
	url, code := e.hlsURL(t, map[string]any{
		"StreamName":   "cam",
		"PlaybackMode": "ON_DEMAND",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	if _, media := mediaPlaylist(t, url); strings.Count(media, "getMP4MediaFragment.mp4") != n+1 {
		t.Fatalf("media playlist:\n%s", media)
	}
	p := e.srv.playback
	p.mu.Lock()
	entries, size := len(p.trackKeys), 0
	for _, k := range p.trackKeys {
		size += len(k)
	}
	p.mu.Unlock()
	if entries != n+1 || size > entries*256 {
		t.Fatalf("%d track keys cached, %d bytes: want %d, at most 256 bytes each", entries, size, n+1)
	}
}

// TestHLSProducerClockAtEpoch: a producer whose timestamps start at the Unix epoch (RELATIVE
// timecodes with a start timestamp of 0, or a camera without NTP or a real-time clock) is played
// through HLS as through DASH (TestDASHProducerClockAtEpoch): the first fragment's B-frames would
// decode before the epoch, and its media segment was InvalidMediaFrameException ("first decode
// time 7200 ticks before the timeline start").
func TestHLSProducerClockAtEpoch(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffprobe
	e := newMediaEnv(t, "mem")
	uploadAtEpoch(t, e, "cam")
	now := time.Now().Unix()
	url, code := e.hlsURL(t, map[string]any{
		"StreamName":   "cam",
		"PlaybackMode": "ON_DEMAND",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": now - 3600, "EndTimestamp": now + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	base := url[:strings.LastIndex(url, "/")+1]
	for _, m := range regexp.MustCompile(`(?m)^getMP4MediaFragment\.mp4\?\S+$`).FindAllString(media, -1) {
		if code, _, b := httpGet(t, base+m); code != 200 {
			t.Errorf("%s: %d %s", m[strings.LastIndex(m, "&")+1:], code, b)
		}
	}
	if got, want := ffprobeStreams(t, url), wantStreams(t, "h264.mkv", 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ffprobe of the HLS URL:\n got %+v\nwant %+v", got, want)
	}
}

// TestHLSReorderDelayGrows: a fragment whose B-frame reorder delay is longer than the one before
// it (x264 with adaptive B-frames: a GOP of I P P P, then one of I P B B) must not decode its
// keyframe at or before the previous segment's last decode time: ffmpeg marks that keyframe
// discarded, and the rest of its GOP decodes from the previous GOP's pictures (an x264
// b-adapt=2 encode played through HLS read 198 of its 200 frames). Decode times increase
// through the playlist's segments, presentation times are the producer's.
func TestHLSReorderDelayGrows(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffprobe
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	frame := func(tc int64, key bool) mkv.Frame {
		return mkv.Frame{Track: 1, Timecode: baseMillis + tc, Keyframe: key, Data: []byte{0, 0, 0, 1, 0x41}}
	}
	frags := [][]mkv.Frame{
		{frame(0, true), frame(40, false), frame(80, false), frame(120, false)},
		{frame(160, true), frame(280, false), frame(200, false), frame(240, false)},
	}
	pc := e.startPut(t, "cam")
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	for _, fr := range frags {
		b, err := mkv.AppendCluster(nil, fr[0].Timecode, fr)
		if err != nil {
			t.Fatal(err)
		}
		pc.fragment(b, fr[0].Timecode, true)
	}
	pc.end()
	url, code := e.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Skip("no ffprobe")
	}
	out, err := exec.CommandContext(t.Context(), bin, "-v", "error", "-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0", url).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var dts, pts []int64
	for _, l := range strings.Fields(string(out)) {
		var p, d int64
		var flags string
		if _, err := fmt.Sscanf(strings.ReplaceAll(l, ",", " "), "%d %d %s", &p, &d, &flags); err != nil {
			t.Fatalf("ffprobe line %q: %v", l, err)
		}
		if strings.Contains(flags, "D") {
			t.Errorf("packet pts %d dts %d marked discarded (%s)", p, d, flags)
		}
		pts, dts = append(pts, p-baseMillis*90), append(dts, d-baseMillis*90)
	}
	for i := 1; i < len(dts); i++ {
		if dts[i] <= dts[i-1] {
			t.Errorf("packet %d decodes at %d, not after packet %d (%d): decode times %v", i, dts[i], i-1, dts[i-1], dts)
		}
	}
	// 90 kHz: 40 ms is 3600 ticks.
	if want := []int64{0, 3600, 7200, 10800, 14400, 25200, 18000, 21600}; !slices.Equal(pts, want) {
		t.Errorf("presentation times %v, want %v", pts, want)
	}
}
