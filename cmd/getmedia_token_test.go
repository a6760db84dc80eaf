package cmd

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// failingWriter accepts ok writes, then fails every one after.
type failingWriter struct {
	ok int
	n  int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n >= w.ok {
		return 0, errors.New("no space left on device")
	}
	w.n++
	return len(p), nil
}

var tokenLine = regexp.MustCompile(`continuation token: ([0-9]+)`)

// When get-media cannot write a fragment (a full disk, a player that exited), the continuation
// token it prints is that of the last fragment it wrote: resuming from it gets the failed one
// again instead of skipping it.
func TestGetMediaTokenOnWriteFailure(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", filepath.Join("..", "testdata", "h264.mkv"), "--create", "--fragment-duration", "1s")
	_, _, errs := kvsRun(t.Context(), t, url, nil, "get-media", "--stream-name", "cam", "--start-selector", "EARLIEST", "--no-follow", "--format", "raw", "--max-fragments", "1")
	m := tokenLine.FindStringSubmatch(errs)
	if m == nil {
		t.Fatalf("first get-media: no token in %q", errs)
	}
	first := m[1]

	var errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &failingWriter{ok: 1}, Stderr: &errb, Getenv: func(string) string { return "" },
		Log: slog.New(slog.NewTextHandler(&errb, nil))}
	code := Run(t.Context(), env, []string{"--endpoint", url, "get-media", "--stream-name", "cam", "--start-selector", "EARLIEST", "--no-follow", "--format", "raw"})
	if code == ExitOK {
		t.Fatalf("get-media to a failing output: exit 0: %s", errb.String())
	}
	m = tokenLine.FindStringSubmatch(errb.String())
	if m == nil || m[1] != first {
		t.Fatalf("token printed after the second fragment failed to write: %v, want %s (the last one written)\nstderr: %s", m, first, errb.String())
	}
}
