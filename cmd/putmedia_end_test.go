package cmd

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// put-media's "s of media" is what the server stores: the sum of ListFragments'
// FragmentLengthInMilliseconds (the audio frame that ends after the next fragment's keyframe is
// not counted twice).
func TestPutMediaSummaryMediaMatchesListFragments(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	for _, clip := range []string{"h264.mkv", "h264_aac.mkv"} {
		stream := strings.TrimSuffix(clip, ".mkv")
		out := mustRun(t, url, nil, "put-media", "--stream-name", stream, "--create", "--source", testClip(clip), "--fragment-duration", "1s")
		m := regexp.MustCompile(` ([0-9.]+) s of media `).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: summary %q has no \"s of media\"", clip, out)
		}
		var list struct{ Fragments []fragmentOutput }
		if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--output", "json")), &list); err != nil {
			t.Fatal(err)
		}
		var sum time.Duration
		for _, f := range list.Fragments {
			sum += time.Duration(f.FragmentLengthInMilliseconds) * time.Millisecond
		}
		if want := strconv.FormatFloat(sum.Seconds(), 'f', 3, 64); m[1] != want {
			t.Errorf("%s: summary says %s s of media; ListFragments' lengths add up to %s s\n%s", clip, m[1], want, out)
		}
	}
}

// Ctrl-C is how a live put-media (a camera, --loop) ends, and it still prints the summary: before,
// stdout was empty and stderr had only "interrupted fragments=N stored=M", although --help says
// "Output: a summary on stdout".
func TestPutMediaInterruptSummary(t *testing.T) {
	t.Parallel()
	url, st := e2eServer(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := st.Last(ctx, "loop"); err == nil {
				cancel() // a fragment is stored: Ctrl-C
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	code, out, errs := kvsRun(ctx, t, url, nil, "put-media", "--stream-name", "loop", "--create",
		"--source", testClip("h264.mkv"), "--loop", "--realtime", "--fragment-duration", "1s")
	if code != ExitInterrupted {
		t.Fatalf("exit %d, want %d\n%s", code, ExitInterrupted, errs)
	}
	if !strings.HasPrefix(out, "put-media loop: ") || !strings.Contains(out, " PERSISTED, 0 failed") {
		t.Errorf("stdout after Ctrl-C: %q, want the summary\nstderr: %s", out, errs)
	}
}
