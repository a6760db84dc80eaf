package testutil

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "sh"); p == "" {
		t.Fatal("sh not found")
	}
	if p := FindTool("no-such-tool-kvs"); p != "" {
		t.Fatalf("found %s", p)
	}
}

// Parallel callers of one key share one run of f, and its error; another key runs f again.
func TestMemo(t *testing.T) {
	var m Memo[string, int]
	var runs atomic.Int32
	f := func() (int, error) { runs.Add(1); return 7, errors.New("seven") }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if v, err := m.Get("a", f); v != 7 || err == nil || err.Error() != "seven" {
				t.Errorf("Get: %d, %v; want 7, seven", v, err)
			}
		})
	}
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Errorf("f ran %d times for one key, want 1", n)
	}
	_, _ = m.Get("b", f)
	if runs.Load() != 2 {
		t.Errorf("f ran %d times for two keys, want 2", runs.Load())
	}
}
