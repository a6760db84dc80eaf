package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/openkvs/kvs/internal/testutil"
)

// requestCounter serves h and counts its requests by path.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// countRequests returns a server of e's handler that counts the requests it serves.
func countRequests(t *testing.T, e *mediaEnv) (*httptest.Server, *requestCounter) {
	rc := &requestCounter{n: map[string]int{}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.n[r.URL.Path]++
		rc.mu.Unlock()
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts, rc
}

// total is how many requests were for paths starting with prefix.
func (rc *requestCounter) total(prefix string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for p, c := range rc.n {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// TestConsoleStreamDeletedWhilePlaying: a stream deleted while its page plays it gets a notice
// that says so, and the page stops asking the server for it (it asked for a new HLS session
// every second, for as long as the page stayed open, and showed "buffering").
func TestConsoleStreamDeletedWhilePlaying(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	arn := e.createStream(t, "cam", 24)
	stop := livePut(t, e, "cam", loadClip(t, "h264.mkv"), time.Now().Add(-10*time.Second).UnixMilli())
	t.Cleanup(stop)
	ts, rc := countRequests(t, e)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(ts.URL+"/#/stream/cam"))
	consoleWait(t, 20*time.Second, "the live player plays", func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
	stop()
	e.deleteStream(t, arn)
	var s playerState
	consoleWait(t, 20*time.Second, "the page says the stream was deleted", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return strings.Contains(s.Notice, "deleted"), fmt.Sprintf("%s; %d session requests so far", s, rc.total("/getHLSStreamingSessionURL"))
	})
	before := map[string]int{}
	for _, p := range []string{"/getHLSStreamingSessionURL", "/hls/", "/listFragments", "/getImages"} {
		before[p] = rc.total(p)
	}
	time.Sleep(6 * time.Second)
	for p, n := range before {
		if d := rc.total(p) - n; d > 1 {
			t.Errorf("%d requests to %s in 6 s after the page said the stream was deleted, want at most 1", d, p)
		}
	}
	t.Logf("after: %s; requests %v", s, rc.n)
}
