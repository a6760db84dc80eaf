package cmd

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// A GetMediaForFragmentList answer broken in the middle (the server restarted, a proxy dropped
// the connection) is fetched again, as an answer with a 5xx is: get-fragments gets every
// fragment once, in order, in both formats and to a file or a pipe.
func TestGetFragmentsBrokenAnswerRetried(t *testing.T) {
	t.Parallel()
	var cuts atomic.Int32 // answers still to break
	url, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMediaForFragmentList" && cuts.Add(-1) >= 0 {
				w = &testutil.CutWriter{ResponseWriter: w, Left: 3000}
			}
			h.ServeHTTP(w, r)
		})
	})
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	for _, tc := range []struct {
		name string
		args []string
		file bool
	}{
		{"raw to a pipe", []string{"--format", "raw", "-o", "-"}, false},
		{"raw to a file", []string{"--format", "raw"}, true},
		{"mkv", []string{"--format", "mkv", "-o", "-"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cuts.Store(0)
			want := mustRun(t, url, nil, append([]string{"get-fragments", "--stream-name", "s", "--parallel", "1"}, tc.args...)...)
			args := append([]string{"get-fragments", "--stream-name", "s", "--parallel", "1"}, tc.args...)
			out := filepath.Join(t.TempDir(), "out.mkv")
			if tc.file {
				args = append(args, "-o", out)
			}
			cuts.Store(1)
			code, got, errs := kvsRun(t.Context(), t, url, nil, args...)
			if code != ExitOK {
				t.Fatalf("get-fragments with one answer broken: exit %d\n%s", code, errs)
			}
			if tc.file {
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			if !bytes.Equal([]byte(got), []byte(want)) {
				t.Errorf("got %d bytes, want the %d of an unbroken download", len(got), len(want))
			}
			if strings.Contains(errs, "incomplete") {
				t.Errorf("stderr: %s", errs)
			}
		})
	}
}
