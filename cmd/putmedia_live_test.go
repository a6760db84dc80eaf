//go:build cgo

package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// testPattern is held by the tests that capture from the live test pattern: it is one device for
// the whole process, which only one capture may open at a time.
var testPattern sync.Mutex

// TestE2ETestPattern puts 3 s of the live test pattern (320x240, 15 fps, 1 s fragments) into a
// real server and reads it back with list-fragments, get-media and ffprobe.
func TestE2ETestPattern(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testPattern.Lock()
	defer testPattern.Unlock()
	testutil.NeedTool(t, "ffprobe")
	url, _ := e2eServer(t, nil)
	out := mustRun(t, url, nil, "put-media", "--stream-name", "testsrc", "--create", "--source", "testsrc",
		"--duration", "3s", "--fps", "15", "--width", "320", "--height", "240", "--fragment-duration", "1s")
	var frags, stored, failed int
	var final string
	if _, err := fmt.Sscanf(out[strings.Index(out, ":")+1:], " %d fragment", &frags); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	if _, err := fmt.Sscanf(out[strings.LastIndex(out, ";")+1:], " %d %s %d failed", &stored, &final, &failed); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	if frags < 2 || frags > 4 || stored != frags || final != "PERSISTED," || failed != 0 {
		t.Errorf("summary %q: want about 3 fragments, all PERSISTED", out)
	}
	if n := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "testsrc", "--output", "numbers")); len(n) != frags {
		t.Errorf("list-fragments: %d fragments, put-media sent %d", len(n), frags)
	}

	got := filepath.Join(t.TempDir(), "testsrc.mkv")
	mustRun(t, url, nil, "get-media", "--stream-name", "testsrc", "--start-selector", "EARLIEST", "--no-follow", "-o", got)
	p := ffprobe(t, got)
	// 45 frames at most; fewer when a loaded machine made the test pattern drop ticks (the capture
	// package checks the count against the capture clock).
	if n := p.Frames["video:h264"]; len(p.Frames) != 1 || n < 22 || n > 47 {
		t.Errorf("get-media: frames %v, want about 45 h264", p.Frames)
	}
	if p.Duration < 2.5 || p.Duration > 3.5 {
		t.Errorf("get-media: %.3f s, want about 3", p.Duration)
	}
	if p.VideoSize != "320,240" {
		t.Errorf("get-media: size %q; want 320,240", p.VideoSize)
	}
}

// TestE2ETestPatternInterrupt stops a live put-media (no --duration) after its first PERSISTED
// ack: the fragment in progress is still finished, sent and persisted, and it exits 130.
func TestE2ETestPatternInterrupt(t *testing.T) {
	t.Parallel()
	testPattern.Lock()
	defer testPattern.Unlock()
	url, st := e2eServer(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	var errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &errb, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		code := Run(ctx, env, []string{"--endpoint", url, "put-media", "--stream-name", "live", "--create",
			"--source", "testsrc", "--width", "160", "--height", "120", "--fps", "10", "--fragment-duration", "1s", "--output", "json"})
		pw.Close()
		done <- code
	}()
	sc := bufio.NewScanner(pr)
	persisted := 0
	for sc.Scan() {
		var a struct{ EventType string }
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("ack line %q: %v", sc.Text(), err)
		}
		if a.EventType == "PERSISTED" {
			if persisted++; persisted == 1 {
				cancel()
			}
		}
	}
	if code := <-done; code != ExitInterrupted {
		t.Fatalf("exit %d, want 130: %s", code, errb.String())
	}
	// The Fragmenter had started the second fragment when it returned the first: it is flushed.
	if persisted < 2 {
		t.Errorf("%d PERSISTED acks after the stop, want the fragment in progress too: %s", persisted, errb.String())
	}
	last, err := st.Last(context.Background(), "live")
	if err != nil || last.Number < uint64(persisted) { //nolint:gosec // small
		t.Errorf("store after interrupt: last %+v, %v; %d PERSISTED acks", last, err, persisted)
	}
}

func TestPutMediaLiveOptionsValidate(t *testing.T) {
	t.Parallel()
	base := putMediaOptions{Stream: streamRef{Name: "s"}, FragmentDuration: 2 * time.Second, Output: "text"}
	for _, tc := range []struct {
		name string
		edit func(*putMediaOptions)
		want string // "" for valid
	}{
		{name: "testsrc", edit: func(o *putMediaOptions) { o.Source = "testsrc"; o.Width, o.Height, o.FPS = 320, 240, 15 }},
		{name: "camera device", edit: func(o *putMediaOptions) { o.Source = "camera:/dev/video0"; o.Duration = 2 * time.Second }},
		{name: "odd width", edit: func(o *putMediaOptions) { o.Source = "testsrc"; o.Width = 321 }, want: "even"},
		{name: "loop", edit: func(o *putMediaOptions) { o.Source = "camera"; o.Loop = true }, want: "--loop"},
		{name: "size with a file", edit: func(o *putMediaOptions) { o.Source = "clip.mkv"; o.Width = 320 }, want: "live sources"},
		{name: "duration with a file", edit: func(o *putMediaOptions) { o.Source = "-"; o.Duration = 2 * time.Second }, want: "live sources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			err := o.validate()
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate: %v, want %q", err, tc.want)
			}
		})
	}
}
