package store

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestCommitPacer: one stream (or a few) never waits for a commit; once busyStreams or more
// append within a window, commits are spaced by commitInterval.
func TestCommitPacer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var p commitPacer
		one := []*appendRequest{{st: &fsStream{}}}
		start := time.Now()
		for range 50 {
			p.wait(one)
			time.Sleep(time.Millisecond) // a sequential appender: commit, then the next append
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("one stream: 50 commits took %v, want 50ms (no waits)", d)
		}
		var many []*appendRequest
		for range busyStreams {
			many = append(many, &appendRequest{st: &fsStream{}})
		}
		p.wait(many)
		time.Sleep(busyWindow + time.Millisecond) // the window closes: busy from now on
		p.wait(many)
		start = time.Now()
		for range 10 {
			p.wait(many[:1])
		}
		if d := time.Since(start); d != 10*commitInterval {
			t.Errorf("busy: 10 commits took %v, want %v", d, 10*commitInterval)
		}
	})
}
