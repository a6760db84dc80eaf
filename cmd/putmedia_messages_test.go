package cmd

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// deleteOnUpload deletes stream (through the kvs CLI at *url) when the server first reads a
// PutMedia body: the upload has started, and the server ends it with ERROR 4008.
func deleteOnUpload(t *testing.T, url *string, stream string) func(http.Handler) http.Handler {
	var once sync.Once
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/putMedia" {
				r.Body = testutil.BeforeFirstRead(r.Body, func() {
					once.Do(func() { mustRun(t, *url, nil, "delete-stream", "--stream-name", stream) })
				})
			}
			h.ServeHTTP(w, r)
		})
	}
}

// A stream deleted under put-media ends it with one error on stderr: the ERROR ack that ended the
// upload is the command's error, not also a log line before it.
func TestPutMediaStreamDeletedErrorOnce(t *testing.T) {
	t.Parallel()
	var url string
	url, _ = e2eServer(t, deleteOnUpload(t, &url, "gone"))
	mustRun(t, url, nil, "create-stream", "--stream-name", "gone")
	code, _, errs := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "gone", "--source", testClip("h264.mkv"), "--fragment-duration", "1s")
	if code == ExitOK {
		t.Fatalf("put-media to a stream deleted under it: exit 0\n%s", errs)
	}
	if n := strings.Count(errs, "STREAM_NOT_ACTIVE"); n != 1 {
		t.Errorf("stderr names STREAM_NOT_ACTIVE %d times, want once:\n%s", n, errs)
	}
}

// One fragment is "1 fragment" in put-media's summary; the rest of the line is as it was.
func TestPutMediaSummaryOneFragment(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	for _, tc := range []struct{ duration, want string }{
		{"10s", "put-media one: 1 fragment, "},
		{"1s", "put-media one: 4 fragments, "},
	} {
		out := mustRun(t, url, nil, "put-media", "--stream-name", "one", "--create", "--source", testClip("h264.mkv"), "--fragment-duration", tc.duration)
		if !strings.HasPrefix(out, tc.want) || !strings.Contains(out, " PERSISTED, 0 failed") {
			t.Errorf("--fragment-duration %s: summary %q, want it to start %q", tc.duration, out, tc.want)
		}
	}
}

// deleteBeforeUpload deletes stream (through the kvs CLI at *url) when its first PutMedia request
// comes, before the server sees it: put-media found the stream, PutMedia does not.
func deleteBeforeUpload(t *testing.T, url *string, stream string) func(http.Handler) http.Handler {
	var once sync.Once
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/putMedia" {
				once.Do(func() { mustRun(t, *url, nil, "delete-stream", "--stream-name", stream) })
			}
			h.ServeHTTP(w, r)
		})
	}
}

// A stream deleted under put-media, while it sends or before its PutMedia request, ends it with a
// message that says so in the CLI's words (not the client's "putmedia: STREAM_NOT_ACTIVE …") and
// a hint that says how to make the stream again.
func TestPutMediaStreamGoneMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wrap func(t *testing.T, url *string, stream string) func(http.Handler) http.Handler
	}{
		{"while sending", deleteOnUpload},
		{"before PutMedia", deleteBeforeUpload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var url string
			url, _ = e2eServer(t, tc.wrap(t, &url, "gone"))
			mustRun(t, url, nil, "create-stream", "--stream-name", "gone")
			code, _, errs := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "gone", "--source", testClip("h264.mkv"), "--fragment-duration", "1s")
			if code != ExitNotFound {
				t.Fatalf("exit %d, want %d (the stream does not exist any more, as for get-media)\n%s", code, ExitNotFound, errs)
			}
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			if len(lines) < 2 {
				t.Fatalf("stderr has no hint line:\n%s", errs)
			}
			msg, hint := lines[len(lines)-2], lines[len(lines)-1]
			if !strings.HasPrefix(msg, "kvs: put-media gone: ") || strings.Contains(msg, "putmedia") || !strings.Contains(msg, "deleted") || strings.Contains(msg, ".;") {
				t.Errorf("message %q: want it to say, without the client's \"putmedia\", that the stream gone was deleted", msg)
			}
			if !strings.Contains(hint, "--create") || !strings.Contains(hint, "create-stream") {
				t.Errorf("hint %q: want it to say how to make the stream again (create-stream, --create)", hint)
			}
		})
	}
}
