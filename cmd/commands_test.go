package cmd

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// get-fragments promises output "in fragment-number order". Numbers given on the command line or
// stdin (e.g. from `aws kinesis-video-archived-media list-fragments`, which lists in no order) come
// out in the order given, and a repeated number comes out once or twice depending on --parallel.
func TestGetFragmentsGivenNumbersInFragmentOrder(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	n := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--output", "numbers"))
	if len(n) != 4 {
		t.Fatalf("%d fragments, want 4", len(n))
	}
	given := strings.Join([]string{n[3], n[1], n[2], n[0], n[1]}, "\n") + "\n"
	for _, par := range []string{"1", "4"} {
		out := filepath.Join(t.TempDir(), "raw.mkv")
		mustRun(t, url, strings.NewReader(given), "get-fragments", "--stream-name", "s", "--fragment-numbers", "-",
			"--parallel", par, "--format", "raw", "-o", out)
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		chunks, err := splitChunks(data)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range chunks {
			got = append(got, c.number)
		}
		if !slices.Equal(got, n) {
			t.Errorf("--parallel %s: fragments written in order %v, want %v", par, shortNums(got), shortNums(n))
		}
	}
}

func shortNums(nums []string) []string {
	out := make([]string, len(nums))
	for i, s := range nums {
		out[i] = strings.TrimLeft(s[11:], "0")
	}
	return out
}

// A get-fragments that fails part-way, and a get-media that fails before any media, must not leave
// -o FILE behind looking like a finished download (or, if they keep it, must say so).
func TestFailedDownloadLeavesNoOutputFile(t *testing.T) {
	t.Parallel()
	var lastP atomic.Pointer[string] // the fragment whose batch fails
	url, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if last := lastP.Load(); r.URL.Path == "/getMediaForFragmentList" && last != nil {
				body := make([]byte, r.ContentLength)
				_, _ = r.Body.Read(body)
				if strings.Contains(string(body), *last) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusInternalServerError)
					_, _ = w.Write([]byte(`{"__type":"InternalFailure","Message":"try again"}`))
					return
				}
				r.Body = readCloser{strings.NewReader(string(body))}
			}
			h.ServeHTTP(w, r)
		})
	})
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	n := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--output", "numbers"))
	lastP.Store(&n[len(n)-1]) // the batch with the last fragment fails

	dir := t.TempDir()
	for _, args := range [][]string{
		{"get-fragments", "--stream-name", "s", "--parallel", "4", "-o", filepath.Join(dir, "fragments.mkv")},
		{"get-media", "--stream-name", "missing", "--no-follow", "-o", filepath.Join(dir, "media.mkv")},
	} {
		code, _, errs := kvsRun(t.Context(), t, url, nil, args...)
		if code == ExitOK {
			t.Fatalf("%s: exit 0", args[0])
		}
		path := args[len(args)-1]
		if fi, err := os.Stat(path); err == nil && !strings.Contains(errs, path) {
			t.Errorf("%s failed (exit %d) but left %s (%d bytes) without a word about it; stderr:\n%s", args[0], code, filepath.Base(path), fi.Size(), errs)
		}
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// A missing fragment, or a time range without fragments, in a stream that exists is not a
// misspelt stream name: the hint must not send the user to list-streams / create-stream.
func TestNotFoundHintForMissingFragments(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	missing := "91343852333000000000000000000000000000000000099"
	dir := t.TempDir()
	for _, args := range [][]string{
		{"get-fragments", "--stream-name", "s", "--fragment-numbers", missing, "-o", filepath.Join(dir, "f.mkv")},
		{"get-clip", "--stream-name", "s", "--start", "-10h", "--end", "-9h", "-o", filepath.Join(dir, "c.mp4")},
		{"hls-url", "--stream-name", "s", "--playback-mode", "ON_DEMAND", "--start", "-10h", "--end", "-9h"},
	} {
		code, _, errs := kvsRun(t.Context(), t, url, nil, args...)
		if code != ExitNotFound {
			t.Errorf("%s: exit %d, want %d", args[0], code, ExitNotFound)
		}
		if strings.Contains(errs, "create-stream") || strings.Contains(errs, "Check the name") {
			t.Errorf("%s: stream s exists, but the hint says to check its name:\n%s", args[0], errs)
		}
	}
}

// The missing-fragment hint's list-fragments command line names the stream the user gave, by the
// flag they gave it with, ready to paste (it said --stream-name NAME).
func TestNotFoundHintNamesTheStream(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam-1.a", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	var desc struct{ StreamInfo struct{ StreamARN string } }
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "describe-stream", "--stream-name", "cam-1.a")), &desc); err != nil {
		t.Fatal(err)
	}
	arn := desc.StreamInfo.StreamARN
	missing := "91343852333000000000000000000000000000000000099"
	out := filepath.Join(t.TempDir(), "f.mkv")
	for _, tc := range []struct{ flag, value, want string }{
		{"--stream-name", "cam-1.a", "`kvs list-fragments --stream-name cam-1.a --output table`"},
		{"--stream-arn", arn, "`kvs list-fragments --stream-arn " + arn + " --output table`"},
	} {
		code, _, errs := kvsRun(t.Context(), t, url, nil, "get-fragments", tc.flag, tc.value, "--fragment-numbers", missing, "-o", out)
		if code != ExitNotFound || !strings.Contains(errs, tc.want) {
			t.Errorf("get-fragments %s %s: exit %d, want %d and a hint with %s:\n%s", tc.flag, tc.value, code, ExitNotFound, tc.want, errs)
		}
	}
	for _, tc := range []struct{ name, want string }{
		{"cam", "cam"}, {"cam-1_a.b", "cam-1_a.b"}, {"arn:aws:kinesisvideo:us-east-1:0:stream/s/1", "arn:aws:kinesisvideo:us-east-1:0:stream/s/1"},
		{"my cam", "'my cam'"}, {"it's", `'it'\''s'`}, {"$x", "'$x'"}, {"", "''"},
	} {
		if got := shellQuote(tc.name); got != tc.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The stream verbs take the AWS CLI's flags: list arguments as separate words, the pagination
// flags of a paginated operation, and update-stream.
func TestStreamCommandsAcceptAWSCLIFlags(t *testing.T) {
	t.Parallel()
	url, _ := kvsServer(t)
	mustRun(t, url, nil, "create-stream", "--stream-name", "s", "--tags", "a=1,b=2,c=3")
	mustRun(t, url, nil, "create-stream", "--stream-name", "t")
	for _, args := range [][]string{
		{"untag-stream", "--stream-name", "s", "--tag-key-list", "a", "b"}, // aws kinesisvideo untag-stream ... --tag-key-list a b
		{"update-stream", "--stream-name", "s", "--media-type", "video/h265"},
	} {
		if code, _, errs := kvsRun(t.Context(), t, url, nil, args...); code != ExitOK {
			t.Errorf("kvs %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
	}
	var tags struct{ Tags map[string]string }
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-tags-for-stream", "--stream-name", "s")), &tags); err != nil || len(tags.Tags) != 1 || tags.Tags["c"] != "3" {
		t.Errorf("tags after untag-stream --tag-key-list a b: %v (%v), want only c=3", tags.Tags, err)
	}
	var desc struct{ StreamInfo struct{ MediaType string } }
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "describe-stream", "--stream-name", "s")), &desc); err != nil || desc.StreamInfo.MediaType != "video/h265" {
		t.Errorf("MediaType after update-stream: %q (%v), want video/h265", desc.StreamInfo.MediaType, err)
	}
	var page struct {
		StreamInfoList []struct{ StreamName string }
		NextToken      string
	}
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-streams", "--max-items", "1")), &page); err != nil || len(page.StreamInfoList) != 1 || page.NextToken == "" {
		t.Fatalf("list-streams --max-items 1: %+v (%v), want one stream and a NextToken", page, err)
	}
	if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-streams", "--starting-token", page.NextToken)), &page); err != nil || len(page.StreamInfoList) != 1 || page.StreamInfoList[0].StreamName != "t" {
		t.Errorf("list-streams --starting-token: %+v (%v), want stream t", page, err)
	}
}

// One transient 500 (InternalFailure, which the SDK-based commands retry) on one
// GetMediaForFragmentList batch aborts the whole get-fragments download.
func TestGetFragmentsRetriesTransientBatchFailure(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, failFirst(func(r *http.Request) string { // each batch fails once, then succeeds
		if r.URL.Path != "/getMediaForFragmentList" {
			return ""
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		return string(body)
	}, http.StatusInternalServerError, "InternalFailure", "try again"))
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	out := filepath.Join(t.TempDir(), "all.mkv")
	if code, _, errs := kvsRun(t.Context(), t, url, nil, "get-fragments", "--stream-name", "s", "--parallel", "2", "-o", out); code != ExitOK {
		t.Fatalf("get-fragments: exit %d: %s", code, errs)
	}
	sameMedia(t, "get-fragments after retries", ffprobe(t, out), probe{Frames: map[string]int{"video:h264": 100}, Duration: 4})
}

// ClientLimitExceededException is KVS's throttling answer (kvs server gives it when more GetImages
// requests are in flight than it serves at once, and says "retry in a moment"; KVS when a stream's
// TPS limit is reached). The SDK's standard retryer does not know the code, so get-images and
// list-fragments failed at the first one, get-images after writing part of its images. They now
// retry it as the SDK retries throttling.
func TestArchivedCommandsRetryClientLimit(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, failFirst(func(r *http.Request) string {
		if r.URL.Path == "/getImages" || r.URL.Path == "/listFragments" {
			return r.URL.Path
		}
		return ""
	}, http.StatusBadRequest, "ClientLimitExceededException", "This server is already serving 4 GetImages requests; retry in a moment."))
	mustRun(t, url, nil, "create-stream", "--stream-name", "s", "--data-retention-in-hours", "1")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"get-images", "--stream-name", "s", "--start", "-30s", "--end", "now", "--interval", "10s", "-o", dir, "--output", "json"},
		{"list-fragments", "--stream-name", "s"},
	} {
		if code, _, errs := kvsRun(t.Context(), t, url, nil, args...); code != ExitOK {
			t.Errorf("kvs %s: exit %d after one ClientLimitExceededException, want %d: %s", args[0], code, ExitOK, errs)
		}
	}
}

// failFirst wraps a server's handler: the first request of each key (keyOf's answer; "" for a
// request to pass on) gets an AWS JSON error, status and type errType, instead of the server's
// answer; later ones go through.
func failFirst(keyOf func(*http.Request) string, status int, errType, msg string) func(http.Handler) http.Handler {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := keyOf(r)
			mu.Lock()
			first := key != "" && !seen[key]
			seen[key] = true
			mu.Unlock()
			if !first {
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("x-amzn-ErrorType", errType)
			w.WriteHeader(status)
			b, _ := json.Marshal(map[string]string{"__type": errType, "Message": msg})
			_, _ = w.Write(b)
		})
	}
}

// get-fragments -o FILE over a time range without fragments ends with exit 0 and a warning, as
// get-media does; like get-media, it must leave FILE holding what it got (nothing), not the media
// a previous run wrote there, which a script would then take for this range's.
func TestGetFragmentsEmptyRangeEmptiesOutputFile(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	dir := t.TempDir()
	for _, format := range []string{"mkv", "raw"} {
		out := filepath.Join(dir, format+".mkv")
		mustRun(t, url, nil, "get-fragments", "--stream-name", "s", "--format", format, "-o", out)
		code, _, errs := kvsRun(t.Context(), t, url, nil, "get-fragments", "--stream-name", "s", "--format", format,
			"--start", "-10h", "--end", "-9h", "-o", out)
		if code != ExitOK || !strings.Contains(errs, "no fragments") {
			t.Errorf("--format %s, empty range: exit %d, stderr %q; want 0 and a warning", format, code, errs)
		}
		if data, err := os.ReadFile(out); err != nil || len(data) != 0 {
			t.Errorf("--format %s, empty range: -o FILE holds %d bytes (%v); want it empty, not the previous run's media", format, len(data), err)
		}
	}
}

// get-fragments --fragment-numbers - takes numbers separated by commas or blanks as well as one
// per line, so a list joined on one line (jq's join(","), the AWS CLI's text output) works at any
// length: a line of more than 64 KiB (about 1,400 real 47-digit numbers) failed with
// "bufio.Scanner: token too long".
func TestGetFragmentsLongLineOfNumbers(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	n := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--output", "numbers"))
	if len(n) != 4 {
		t.Fatalf("%d fragments, want 4", len(n))
	}
	var line []string
	for range 1500 { // repeats are fetched once
		line = append(line, n...)
	}
	given := strings.Join(line, ",") + "\n"
	out := filepath.Join(t.TempDir(), "raw.mkv")
	code, _, errs := kvsRun(t.Context(), t, url, strings.NewReader(given), "get-fragments", "--stream-name", "s",
		"--fragment-numbers", "-", "--format", "raw", "-o", out)
	if code != ExitOK {
		t.Fatalf("get-fragments with a %d-byte line of numbers: exit %d: %s", len(given), code, errs)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := splitChunks(data)
	if err != nil || len(chunks) != 4 {
		t.Errorf("%d chunks (%v), want the 4 fragments", len(chunks), err)
	}
}

// kvs list-fragments --output numbers | kvs get-fragments --fragment-numbers - (the pipeline the
// list-fragments help shows) over a range without fragments gets nothing: the empty list on
// stdin, or an empty --fragment-numbers "$NUMS", downloaded the whole stream instead.
func TestGetFragmentsNoNumbersGivenGetsNothing(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	none := mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--start", "-10h", "--end", "-9h", "--output", "numbers")
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"stdin": {"--fragment-numbers", "-"},
		"empty": {"--fragment-numbers", ""},
	} {
		out := filepath.Join(dir, name+".raw")
		args = append([]string{"get-fragments", "--stream-name", "s", "--format", "raw", "-o", out}, args...)
		code, _, errs := kvsRun(t.Context(), t, url, strings.NewReader(none), args...)
		if code != ExitOK || !strings.Contains(errs, "no fragments") {
			t.Errorf("%s: exit %d, stderr %q; want 0 and a warning that there were no fragments", name, code, errs)
		}
		if data, err := os.ReadFile(out); err == nil && len(data) != 0 {
			t.Errorf("%s: -o FILE holds %d bytes; want no fragment, not the whole stream (stderr %q)", name, len(data), errs)
		}
	}
}

// A download that fails before its first byte (a misspelt stream, a fragment number that does not
// exist) must leave an existing -o FILE as it was: a user who re-runs a download over last
// week's clip and mistypes the name lost the clip (truncated, then removed as empty).
func TestFailedDownloadKeepsEarlierFile(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	missing := "91343852333000000000000000000000000000000000099"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"get-media missing stream", []string{"get-media", "--stream-name", "typo", "--no-follow"}},
		{"get-fragments missing fragment", []string{"get-fragments", "--stream-name", "s", "--fragment-numbers", missing}},
		{"get-fragments raw missing fragment", []string{"get-fragments", "--stream-name", "s", "--fragment-numbers", missing, "--format", "raw"}},
		{"get-clip missing stream", []string{"get-clip", "--stream-name", "typo", "--start", "-1h", "--end", "now"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "earlier.mkv")
			earlier := []byte("last week's media")
			if err := os.WriteFile(out, earlier, 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, errs := kvsRun(t.Context(), t, url, nil, append(tc.args, "-o", out)...)
			if code != ExitNotFound {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitNotFound, errs)
			}
			if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, earlier) {
				t.Errorf("-o FILE after a failure before any media: %q (%v), want it as it was, %q", got, err, earlier)
			}
		})
	}
}
