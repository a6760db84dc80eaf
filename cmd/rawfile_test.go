package cmd

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openkvs/kvs/internal/servertest"
	"github.com/openkvs/kvs/mkv"
)

// noLength is a handler wrapper that sends every answer without a Content-Length (chunked), as
// an older kvs or another server may.
func noLength(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(noLengthWriter{w}, r)
	})
}

type noLengthWriter struct{ http.ResponseWriter }

func (w noLengthWriter) WriteHeader(code int) {
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
}

func (w noLengthWriter) Write(b []byte) (int, error) { return w.ResponseWriter.Write(b) }

func (w noLengthWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// get-fragments --format raw -o FILE writes each answer at its place as it arrives (rawfile.go):
// the file holds exactly what the in-order path writes to stdout, with answers that have a
// Content-Length (kvs; "served": as kvs server runs, by sendfile and splice) and without (read
// whole first), and a file that was longer before ends where the download ends.
func TestGetFragmentsRawToFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wrap func(http.Handler) http.Handler
	}{{"length", nil}, {"chunked", noLength}, {"served", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var url string
			if tc.name == "served" {
				url = servertest.Start(t, nil)
			} else {
				url, _ = e2eServer(t, tc.wrap)
			}
			mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
			numbers := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--output", "numbers"))
			if len(numbers) != 4 {
				t.Fatalf("%d fragments stored, want 4", len(numbers))
			}
			want := mustRun(t, url, nil, "get-fragments", "--stream-name", "s", "--parallel", "4", "--format", "raw", "-o", "-")
			out := filepath.Join(t.TempDir(), "raw.mkv")
			if err := os.WriteFile(out, bytes.Repeat([]byte{0xEE}, 2*len(want)), 0o644); err != nil {
				t.Fatal(err)
			}
			mustRun(t, url, nil, "get-fragments", "--stream-name", "s", "--parallel", "4", "--format", "raw", "-o", out)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(want)) {
				t.Fatalf("the file holds %d bytes, not the %d the in-order path writes to stdout", len(got), len(want))
			}
			// What it holds: the four fragments in order, with their frames.
			fr := mkv.NewFragmentReader(bytes.NewReader(got))
			frames := 0
			for i := 0; ; i++ {
				f, err := fr.Next()
				if errors.Is(err, io.EOF) {
					if i != 4 {
						t.Errorf("%d fragments in the file, want 4", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if num, _ := f.Tag(mkv.TagFragmentNumber); i >= 4 || num != numbers[i] {
					t.Errorf("fragment %d is %s, want %v in order", i, num, numbers)
				}
				frames += len(f.Frames)
			}
			if frames != 100 {
				t.Errorf("%d frames in the file, want the clip's 100", frames)
			}
		})
	}
}

// A raw download to a file whose second answer fails keeps the first answer, whole, and nothing
// after it (the answers after the failed one may have been written already), and says so.
func TestGetFragmentsRawToFileFailure(t *testing.T) {
	t.Parallel()
	var failing atomic.Pointer[string] // the fragment whose batch fails
	url, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if f := failing.Load(); r.URL.Path == "/getMediaForFragmentList" && f != nil {
				body, _ := io.ReadAll(r.Body)
				if bytes.Contains(body, []byte(*f)) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusBadRequest)
					_, _ = w.Write([]byte(`{"__type":"InvalidArgumentException","Message":"no"}`))
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			h.ServeHTTP(w, r)
		})
	})
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	numbers := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "s", "--output", "numbers"))
	first := mustRun(t, url, nil, "get-fragments", "--stream-name", "s", "--fragment-numbers", numbers[0], "--format", "raw", "-o", "-")
	failing.Store(&numbers[1])
	out := filepath.Join(t.TempDir(), "raw.mkv")
	code, _, errs := kvsRun(t.Context(), t, url, nil, "get-fragments", "--stream-name", "s", "--parallel", "4", "--format", "raw", "-o", out)
	if code == ExitOK {
		t.Fatal("get-fragments: exit 0 with a failing batch")
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, []byte(first)) {
		t.Fatalf("the file holds %d bytes (%v), want the first answer's %d", len(got), err, len(first))
	}
	if !strings.Contains(errs, out) || !strings.Contains(errs, "incomplete") {
		t.Errorf("stderr does not say the file is incomplete:\n%s", errs)
	}
}
