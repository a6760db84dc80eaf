package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// e2eServer starts kvs (memory store, real clock) on httptest, with wrap around its handler.
func e2eServer(t *testing.T, wrap func(http.Handler) http.Handler) (string, store.Store) {
	t.Helper()
	return e2eServerConfig(t, server.Config{}, wrap)
}

// e2eSigV4Server starts a kvs server that checks signatures (--auth sigv4) with creds and
// returns its URL.
func e2eSigV4Server(t *testing.T, creds server.Credentials) string {
	t.Helper()
	url, _ := e2eServerConfig(t, server.Config{Credentials: creds}, nil)
	return url
}

// e2eServerConfig is e2eServer with cfg (its Store set to a new memory store).
func e2eServerConfig(t *testing.T, cfg server.Config, wrap func(http.Handler) http.Handler) (string, store.Store) {
	t.Helper()
	st := store.NewMem()
	cfg.Store = st
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	return ts.URL, st
}

// kvsRun runs one kvs command line against endpoint with stdin and returns the exit code, stdout
// and stderr.
func kvsRun(ctx context.Context, t *testing.T, endpoint string, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	env := &Env{Stdin: stdin, Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		Log: slog.New(slog.NewTextHandler(&errb, nil))}
	code := Run(ctx, env, append([]string{"--endpoint", endpoint}, args...))
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, endpoint string, stdin io.Reader, args ...string) string {
	t.Helper()
	code, out, errs := kvsRun(t.Context(), t, endpoint, stdin, args...)
	if code != ExitOK {
		t.Fatalf("kvs %s: exit %d\nstderr: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// probe is what ffprobe reports about a file: frames per codec, the duration, the first video
// stream's packets per GOP (from each keyframe to the next), in order, and its picture size, and
// every packet's presentation time.
type probe struct {
	Frames    map[string]int // "video:h264" → frames
	Duration  float64
	VideoGOPs []int
	VideoSize string               // "320,240": width,height of the first video stream
	PTS       map[string][]float64 // codec type ("video", "audio") → packet presentation times, s, sorted
}

// ffprobe runs ffprobe once on path (it costs about 0.1 s of CPU each, mostly in loading its
// libraries), asking at once for all that the tests check of a file: frames counted by
// decoding, the stream sizes, and the packets' times (for a file whose container names no
// duration, and for the tests that compare them with a source's).
func ffprobe(t *testing.T, path string) probe {
	t.Helper()
	bin := testutil.NeedTool(t, "ffprobe")
	out, err := exec.CommandContext(t.Context(), bin, "-v", "error", "-count_frames", "-show_entries",
		"stream=index,codec_type,codec_name,width,height,nb_read_frames:format=duration:packet=stream_index,pts_time,duration_time,flags",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var res struct {
		Streams []struct {
			Index        int    `json:"index"`
			CodecType    string `json:"codec_type"`
			CodecName    string `json:"codec_name"`
			Width        int    `json:"width"`
			Height       int    `json:"height"`
			NbReadFrames string `json:"nb_read_frames"`
		}
		Packets []struct {
			StreamIndex int    `json:"stream_index"`
			PTS         string `json:"pts_time"`
			Duration    string `json:"duration_time"`
			Flags       string `json:"flags"`
		}
		Format struct {
			Duration string `json:"duration"`
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	p := probe{Frames: map[string]int{}, PTS: map[string][]float64{}}
	video := -1
	kinds := map[int]string{}
	for _, s := range res.Streams {
		n, _ := strconv.Atoi(s.NbReadFrames)
		p.Frames[s.CodecType+":"+s.CodecName] += n
		kinds[s.Index] = s.CodecType
		if s.CodecType == "video" && video < 0 {
			video = s.Index
			p.VideoSize = fmt.Sprintf("%d,%d", s.Width, s.Height)
		}
	}
	for _, pk := range res.Packets {
		pts := 0.0 // ffprobe leaves out a time it does not know
		if pk.PTS != "" {
			if pts, err = strconv.ParseFloat(pk.PTS, 64); err != nil {
				t.Fatalf("ffprobe %s: packet pts_time %q", path, pk.PTS)
			}
		}
		p.PTS[kinds[pk.StreamIndex]] = append(p.PTS[kinds[pk.StreamIndex]], pts)
	}
	for _, v := range p.PTS {
		slices.Sort(v)
	}
	for _, pk := range res.Packets {
		switch {
		case pk.StreamIndex != video:
		case strings.HasPrefix(pk.Flags, "K") || len(p.VideoGOPs) == 0:
			p.VideoGOPs = append(p.VideoGOPs, 1)
		default:
			p.VideoGOPs[len(p.VideoGOPs)-1]++
		}
	}
	p.Duration, _ = strconv.ParseFloat(res.Format.Duration, 64)
	if p.Duration == 0 {
		// An unknown-size live Matroska stream carries no Duration: the presentation span of
		// the first video stream, the end of the last frame minus the start of the first.
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, pk := range res.Packets {
			p, err1 := strconv.ParseFloat(pk.PTS, 64)
			d, err2 := strconv.ParseFloat(pk.Duration, 64)
			if pk.StreamIndex != video || err1 != nil || err2 != nil {
				continue
			}
			lo, hi = math.Min(lo, p), math.Max(hi, p+d)
		}
		if hi > lo {
			p.Duration = hi - lo
		}
	}
	return p
}

// sameMedia checks frame counts and codecs equal and durations close (within 10%, or 0.2 s).
func sameMedia(t *testing.T, what string, got, want probe) {
	t.Helper()
	if fmt.Sprint(got.Frames) != fmt.Sprint(want.Frames) {
		t.Errorf("%s: frames %v, source %v", what, got.Frames, want.Frames)
	}
	if want.Duration > 0 && math.Abs(got.Duration-want.Duration) > max(0.2, want.Duration/10) {
		t.Errorf("%s: duration %.3f s, source %.3f s", what, got.Duration, want.Duration)
	}
}

// clip is a testdata input with what ffprobe sees in it.
var e2eClips = []struct {
	name   string
	file   string
	stdin  bool
	frames map[string]int
	secs   float64
}{
	{"h264 mkv with B-frames", "h264.mkv", false, map[string]int{"video:h264": 100}, 4},
	{"h264 aac mp4", "h264_aac.mp4", false, map[string]int{"video:h264": 100, "audio:aac": 188}, 4},
	{"h264 annex b on stdin", "h264.h264", true, map[string]int{"video:h264": 100}, 4},
	{"h265 mkv", "h265.mkv", false, map[string]int{"video:hevc": 50}, 2},
}

func TestE2EClips(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	for _, clip := range e2eClips {
		t.Run(clip.name, func(t *testing.T) {
			t.Parallel()
			url, _ := e2eServer(t, nil)
			dir := t.TempDir()
			want := probe{Frames: clip.frames, Duration: clip.secs}
			stream := strings.ReplaceAll(strings.TrimSuffix(clip.file, filepath.Ext(clip.file)), "_", "-")

			src, stdin := filepath.Join("..", "testdata", clip.file), io.Reader(nil)
			if clip.stdin {
				data, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				src, stdin = "-", bytes.NewReader(data)
			}
			out := mustRun(t, url, stdin, "put-media", "--stream-name", stream, "--source", src, "--create", "--fragment-duration", "1s")
			nFrag := int(clip.secs) // one fragment per second (a keyframe every 25 frames)
			if !strings.Contains(out, fmt.Sprintf(": %d fragments,", nFrag)) || !strings.Contains(out, fmt.Sprintf("%d PERSISTED, 0 failed", nFrag)) {
				t.Errorf("put-media summary %q, want %d fragments all persisted", out, nFrag)
			}

			// get-media to a file, as one continuous Matroska stream.
			got := filepath.Join(t.TempDir(), "get-media.mkv")
			code, _, errs := kvsRun(t.Context(), t, url, nil, "get-media", "--stream-name", stream, "--start-selector", "EARLIEST", "--no-follow", "-o", got)
			if code != ExitOK {
				t.Fatalf("get-media: exit %d: %s", code, errs)
			}
			if !strings.Contains(errs, "continuation token: 91343852333") {
				t.Errorf("get-media stderr %q: no continuation token", errs)
			}
			sameMedia(t, "get-media", ffprobe(t, got), want)
			if mkvmerge := testutil.NeedTool(t, "mkvmerge"); mkvmerge != "" {
				out, err := exec.CommandContext(t.Context(), mkvmerge, "-J", got).Output()
				var id struct {
					Container struct{ Recognized, Supported bool }
					Tracks    []struct{ Codec string }
				}
				if err != nil || json.Unmarshal(out, &id) != nil || !id.Container.Recognized || !id.Container.Supported || len(id.Tracks) != len(clip.frames) {
					t.Errorf("mkvmerge -J: %v: %s", err, out)
				}
			}

			// list-fragments in its three forms.
			numbers := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--output", "numbers"))
			if len(numbers) != nFrag {
				t.Fatalf("list-fragments numbers: %v, want %d", numbers, nFrag)
			}
			var listed struct {
				Fragments []struct {
					FragmentNumber               string
					FragmentSizeInBytes          int64
					ProducerTimestamp            string
					FragmentLengthInMilliseconds int64
				}
			}
			if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--start", "-1h", "--end", "now")), &listed); err != nil {
				t.Fatal(err)
			}
			if len(listed.Fragments) != nFrag {
				t.Fatalf("list-fragments json: %d fragments", len(listed.Fragments))
			}
			for i, f := range listed.Fragments {
				if f.FragmentNumber != numbers[i] || f.FragmentSizeInBytes <= 0 || f.FragmentLengthInMilliseconds < 900 || f.ProducerTimestamp == "" {
					t.Errorf("list-fragments json entry %d: %+v", i, f)
				}
			}
			table := strings.Split(strings.TrimSpace(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--output", "table")), "\n")
			if len(table) != nFrag+1 || !strings.HasPrefix(table[0], "FRAGMENT") || !strings.HasPrefix(table[1], numbers[0]) {
				t.Errorf("list-fragments table:\n%s", strings.Join(table, "\n"))
			}
			// A range in the future selects nothing.
			if n := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--start", "+1h", "--output", "numbers")); len(n) != 0 {
				t.Errorf("future range listed %v", n)
			}

			// get-fragments: the whole stream with parallel batches, then numbers from stdin into a
			// directory.
			all := filepath.Join(dir, "get-fragments.mkv")
			mustRun(t, url, nil, "get-fragments", "--stream-name", stream, "--parallel", "3", "-o", all)
			sameMedia(t, "get-fragments", ffprobe(t, all), want)
			outDir := filepath.Join(dir, "frags")
			mustRun(t, url, strings.NewReader(strings.Join(numbers, "\n")+"\n"), "get-fragments", "--stream-name", stream,
				"--fragment-numbers", "-", "--output-dir", outDir, "--parallel", "2")
			total := map[string]int{}
			for _, n := range numbers {
				p := ffprobe(t, filepath.Join(outDir, n+".mkv"))
				for k, v := range p.Frames {
					total[k] += v
				}
			}
			if fmt.Sprint(total) != fmt.Sprint(clip.frames) {
				t.Errorf("per-fragment files hold %v frames, want %v", total, clip.frames)
			}
			// raw format keeps the KVS tags.
			raw := filepath.Join(dir, "raw.mkv")
			mustRun(t, url, nil, "get-fragments", "--stream-name", stream, "--fragment-numbers", numbers[0]+","+numbers[1], "--format", "raw", "-o", raw)
			if data, err := os.ReadFile(raw); err != nil || bytes.Count(data, []byte("AWS_KINESISVIDEO_FRAGMENT_NUMBER")) != 2 ||
				!bytes.Contains(data, []byte(numbers[1])) {
				t.Errorf("raw get-fragments output lacks the fragment-number tags (%v)", err)
			}
		})
	}
}

// getMediaSubscribed closes ch once a GetMedia response has sent its 200 header: kvs has then
// subscribed the request and fixed where NOW starts.
func getMediaSubscribed(ch chan struct{}) func(http.Handler) http.Handler {
	var once sync.Once
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMedia" {
				w = &headerHook{ResponseWriter: w, fn: func() { once.Do(func() { close(ch) }) }}
			}
			h.ServeHTTP(w, r)
		})
	}
}

type headerHook struct {
	http.ResponseWriter
	fn func()
}

func (w *headerHook) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if code == http.StatusOK {
		w.fn()
	}
}

func (w *headerHook) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestE2ELive starts get-media NOW first, then put-media --realtime: the consumer gets every frame.
func TestE2ELive(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	subscribed := make(chan struct{})
	url, _ := e2eServer(t, getMediaSubscribed(subscribed))
	mustRun(t, url, nil, "create-stream", "--stream-name", "live", "--data-retention-in-hours", "1")
	out := filepath.Join(t.TempDir(), "live.mkv")
	done := make(chan string, 1)
	go func() {
		code, _, errs := kvsRun(t.Context(), t, url, nil, "get-media", "--stream-name", "live", "--max-fragments", "4", "-o", out)
		done <- fmt.Sprintf("exit %d: %s", code, errs)
	}()
	<-subscribed
	mustRun(t, url, nil, "put-media", "--stream-name", "live", "--source", "../testdata/h264.mkv", "--realtime", "--fragment-duration", "1s")
	if res := <-done; !strings.HasPrefix(res, "exit 0") {
		t.Fatalf("get-media: %s", res)
	}
	sameMedia(t, "live get-media", ffprobe(t, out), probe{Frames: map[string]int{"video:h264": 100}, Duration: 4})
}

// TestE2EInterrupt cancels a looping put-media after its first PERSISTED ack: exit 130, and what
// was acknowledged is stored.
func TestE2EInterrupt(t *testing.T) {
	t.Parallel()
	url, st := e2eServer(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	var errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &errb, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		code := Run(ctx, env, []string{"--endpoint", url, "put-media", "--stream-name", "loop", "--create",
			"--source", "../testdata/h264.mkv", "--loop", "--realtime", "--fragment-duration", "1s", "--output", "json"})
		pw.Close()
		done <- code
	}()
	sc := bufio.NewScanner(pr)
	persisted := 0
	for sc.Scan() {
		var a struct{ EventType, FragmentNumber string }
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("ack line %q: %v", sc.Text(), err)
		}
		if a.EventType == "PERSISTED" {
			persisted++
			if persisted == 1 {
				cancel()
			}
		}
	}
	if code := <-done; code != ExitInterrupted {
		t.Fatalf("exit %d, want 130: %s", code, errb.String())
	}
	last, err := st.Last(context.Background(), "loop")
	if err != nil || last.Number < uint64(persisted) { //nolint:gosec // small
		t.Errorf("store after interrupt: last %+v, %v; %d PERSISTED acks", last, err, persisted)
	}
}

// TestE2EAWSCLIListFragments checks that the real AWS CLI sees what put-media stored.
func TestE2EAWSCLIListFragments(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // starts the AWS CLI
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cli", "--create", "--source", "../testdata/h264_aac.mp4", "--fragment-duration", "1s")
	numbers := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "cli", "--output", "numbers"))
	var res struct {
		Fragments []struct{ FragmentNumber string }
	}
	testutil.NewAWSCLI(t, url).OK(&res, "kinesis-video-archived-media", "list-fragments", "--stream-name", "cli", "--fragment-selector",
		fmt.Sprintf("FragmentSelectorType=SERVER_TIMESTAMP,TimestampRange={StartTimestamp=0,EndTimestamp=%d}", time.Now().Add(time.Hour).Unix()))
	if len(res.Fragments) != len(numbers) || len(numbers) != 4 {
		t.Fatalf("aws lists %d fragments, kvs %d (want 4)", len(res.Fragments), len(numbers))
	}
	seen := map[string]bool{}
	for _, f := range res.Fragments {
		seen[f.FragmentNumber] = true
	}
	for _, n := range numbers {
		if !seen[n] {
			t.Errorf("aws does not list %s", n)
		}
	}
}

func TestE2ENotFound(t *testing.T) {
	t.Parallel()
	url, st := e2eServer(t, nil)
	for _, args := range [][]string{
		{"put-media", "--stream-name", "nope", "--source", "../testdata/h264.mkv"},
		{"get-media", "--stream-name", "nope", "--no-follow"},
		{"list-fragments", "--stream-name", "nope"},
		{"get-fragments", "--stream-name", "nope"},
	} {
		if code, _, errs := kvsRun(t.Context(), t, url, nil, args...); code != ExitNotFound {
			t.Errorf("%s: exit %d, want %d: %s", args[0], code, ExitNotFound, errs)
		}
	}
	if streams, _ := st.ListStreams(t.Context()); len(streams) != 0 {
		t.Errorf("read-only commands created %v", streams)
	}
}

// Producers started at once with --create on a stream that does not exist yet all go on: the
// ones whose CreateStream loses the race (ResourceInUseException) use the stream the winner made.
func TestPutMediaCreateRace(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	const producers = 6
	var wg sync.WaitGroup
	codes := make([]int, producers)
	errs := make([]string, producers)
	for i := range producers {
		wg.Go(func() {
			codes[i], _, errs[i] = kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", fmt.Sprint("race", i%2),
				"--create", "--data-retention-in-hours", "2", "--source", testClip("h264.mkv"), "--fragment-duration", "1s")
		})
	}
	wg.Wait()
	for i, code := range codes {
		if code != ExitOK {
			t.Errorf("producer %d: exit %d: %s", i, code, errs[i])
		}
	}
	for _, s := range []string{"race0", "race1"} {
		out := mustRun(t, url, nil, "describe-stream", "--stream-name", s)
		if !strings.Contains(out, `"DataRetentionInHours": 2`) {
			t.Errorf("stream %s: %s", s, out)
		}
	}
}

// TestPutMediaNoKeyframe: a file whose video has no keyframe (cut between two, here with its
// keyframes dropped) cannot be uploaded; put-media says so, naming the file, instead of
// reporting 0 fragments with exit status 0.
func TestPutMediaNoKeyframe(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	src := filepath.Join(t.TempDir(), "nokey.mkv")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-i", filepath.Join("..", "testdata", "h264_aac.mkv"),
		"-c", "copy", "-bsf:v", "noise=drop=key", src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	url, _ := e2eServer(t, nil)
	code, out, stderr := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "nokey", "--create", "--source", src)
	if code == ExitOK || !strings.Contains(stderr, "reading "+src+": no video keyframe in the input") {
		t.Errorf("put-media: exit %d, stdout %q, stderr %q; want an error about the missing keyframe", code, out, stderr)
	}
}

// TestPutMediaTruncatedFile: a recording cut short (the writer killed mid-cluster) is uploaded up
// to where it ends, the fragment in progress included, and put-media then reports the truncation.
func TestPutMediaTruncatedFile(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffprobe")
	data, err := os.ReadFile(filepath.Join("..", "testdata", "h264_aac.mkv"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "cut.mkv")
	if err := os.WriteFile(src, data[:len(data)*7/10], 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := e2eServer(t, nil)
	code, _, stderr := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "cut", "--create", "--source", src, "--fragment-duration", "1s")
	if code == ExitOK || !strings.Contains(stderr, "reading "+src+": ") || !strings.Contains(stderr, "unexpected EOF") {
		t.Errorf("put-media: exit %d, stderr %q; want the truncation reported", code, stderr)
	}
	got := filepath.Join(dir, "get-media.mkv")
	mustRun(t, url, nil, "get-media", "--stream-name", "cut", "--start-selector", "EARLIEST", "--no-follow", "-o", got)
	want := ffprobe(t, src)
	if g := ffprobe(t, got); fmt.Sprint(g.Frames) != fmt.Sprint(want.Frames) {
		t.Errorf("uploaded %v frames, the truncated file holds %v", g.Frames, want.Frames)
	}
}

// TestPutMediaTenSecondFragments: --fragment-duration 10s (the longest KVS takes) on a file with
// 3 s GOPs is stored whole: each fragment ends at the last keyframe that keeps it within 10 s,
// rather than at the keyframe after 10 s, which made 12 s fragments that came back as ERROR 4002
// MAX_FRAGMENT_DURATION_REACHED.
func TestPutMediaTenSecondFragments(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	src := filepath.Join(t.TempDir(), "gop3s.mkv")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "25",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "75", src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	url, _ := e2eServer(t, nil)
	out := mustRun(t, url, nil, "put-media", "--stream-name", "gop3s", "--create", "--source", src, "--fragment-duration", "10s")
	if !strings.Contains(out, ": 3 fragments,") || !strings.Contains(out, "3 PERSISTED, 0 failed") {
		t.Errorf("put-media summary %q, want 3 fragments (9 s, 9 s, 7 s) all persisted", out)
	}
}

// TestPutMediaRecoveryPoints: H.264 whose random access points after the first are recovery
// points (an SEI message), not IDR pictures: x264's open GOPs, and the periodic intra refresh of
// low-latency cameras. ffmpeg marks them keyframes and players start there; put-media must cut
// its fragments there too. It took IDR pictures alone: one GOP of the whole file, cut at 10 s
// inside it, and every fragment after the first came back ERROR 4006 (no keyframe first).
func TestPutMediaRecoveryPoints(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg and ffprobe
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	for _, tc := range recoveryPointEncodings {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := recoveryPointClip(t, ffmpeg, tc, 12)
			url, _ := e2eServer(t, nil)
			code, out, stderr := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "cam", "--create", "--source", src, "--fragment-duration", "1s")
			if code != ExitOK || !strings.Contains(out, ": 12 fragments,") || !strings.Contains(out, "12 PERSISTED, 0 failed") {
				t.Errorf("put-media: exit %d, summary %q, want 12 fragments of 1 s all persisted\nstderr: %s", code, out, lastLine(stderr))
			}
			got := filepath.Join(t.TempDir(), "get-media.mkv")
			mustRun(t, url, nil, "get-media", "--stream-name", "cam", "--start-selector", "EARLIEST", "--no-follow", "-o", got)
			if g := ffprobe(t, got); fmt.Sprint(g.Frames) != "map[video:h264:300]" {
				t.Errorf("get-media gives %v frames, want the file's 300", g.Frames)
			}
		})
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// recoveryPointEncodings are x264 encodings whose random-access points after the first are
// recovery-point SEIs, not IDR pictures.
var recoveryPointEncodings = []struct{ name, params, bframes string }{
	{"intra refresh", "intra-refresh=1:scenecut=0", "0"},
	{"open gop", "open-gop=1:scenecut=0", "2"},
}

// recoveryPointClip encodes seconds of a 160x120, 25 fps test pattern with tc into an MKV file (a
// random-access point every 25 frames) and returns its path.
func recoveryPointClip(t *testing.T, ffmpeg string, tc struct{ name, params, bframes string }, seconds int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.mkv")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-bf", tc.bframes, "-x264-params", tc.params, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return src
}
