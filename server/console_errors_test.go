package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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

// countRequests returns a server of h that counts the requests it serves.
func countRequests(t *testing.T, h http.Handler) (*httptest.Server, *requestCounter) {
	rc := &requestCounter{n: map[string]int{}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.n[r.URL.Path]++
		rc.mu.Unlock()
		h.ServeHTTP(w, r)
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

// camPage is a stream cam fed in real time and its page, playing, in a new tab.
type camPage struct {
	e    *mediaEnv
	arn  string
	stop func() // stops cam's producer
	rc   *requestCounter
	ctx  context.Context
}

// playingCam starts a server with a stream cam fed in real time (10 s of history before now),
// serves front(e) in front of it, counting requests, and opens cam's page until it plays.
func playingCam(t *testing.T, front func(e *mediaEnv) http.Handler) camPage {
	t.Helper()
	p := camPage{e: newMediaEnv(t, "mem")}
	p.arn = p.e.createStream(t, "cam", 24)
	p.stop = livePut(t, p.e, "cam", loadClip(t, "h264.mkv"), time.Now().Add(-10*time.Second).UnixMilli())
	t.Cleanup(p.stop)
	var ts *httptest.Server
	ts, p.rc = countRequests(t, front(p.e))
	p.ctx = newBrowser(t)
	consoleDo(t, p.ctx, "open the stream page", chromedp.Navigate(ts.URL+"/#/stream/cam"))
	consoleWait(t, 20*time.Second, "the live player plays", func() (bool, string) {
		s := eval[playerState](t, p.ctx, playerStateJS)
		return !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
	return p
}

// TestConsoleStreamDeletedWhilePlaying: a stream deleted while its page plays it gets a notice
// that says so, and the page stops asking the server for it (it asked for a new HLS session
// every second, for as long as the page stayed open, and showed "buffering").
func TestConsoleStreamDeletedWhilePlaying(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	p := playingCam(t, func(e *mediaEnv) http.Handler { return e.srv })
	ctx, rc := p.ctx, p.rc
	p.stop()
	p.e.deleteStream(t, p.arn)
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

// flakyProxy serves e's handler like a reverse proxy in front of kvs: while down, every request
// gets 502 Bad Gateway, and the event streams open through it end, as they do when kvs restarts.
type flakyProxy struct {
	next    http.Handler
	mu      sync.Mutex
	down    bool
	cancels map[*http.Request]func()
}

func newFlakyProxy(t *testing.T, e *mediaEnv) (*httptest.Server, *flakyProxy) {
	fp := &flakyProxy{next: e.srv, cancels: map[*http.Request]func(){}}
	ts := httptest.NewServer(fp)
	t.Cleanup(ts.Close)
	return ts, fp
}

func (fp *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fp.mu.Lock()
	if fp.down {
		fp.mu.Unlock()
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	fp.cancels[r] = cancel
	fp.mu.Unlock()
	defer func() { fp.mu.Lock(); delete(fp.cancels, r); fp.mu.Unlock(); cancel() }()
	fp.next.ServeHTTP(w, r.WithContext(ctx))
}

// setDown takes kvs away (ending the requests in progress) or brings it back.
func (fp *flakyProxy) setDown(down bool) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.down = down
	for _, cancel := range fp.cancels {
		cancel()
	}
}

// TestConsoleStreamDeletedWhileProxyDown: kvs behind a reverse proxy restarts, and the stream a
// page plays is deleted meanwhile, so the page never gets its stream.deleted event. The player
// finds out when it asks for a new session: it must say the stream is gone and stop asking (it
// asked for a new session and the playlist every second, for as long as the page stayed open).
func TestConsoleStreamDeletedWhileProxyDown(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	var fp *flakyProxy
	p := playingCam(t, func(e *mediaEnv) http.Handler {
		fp = &flakyProxy{next: e.srv, cancels: map[*http.Request]func(){}}
		return fp
	})
	ctx, rc := p.ctx, p.rc
	fp.setDown(true)
	consoleWait(t, 10*time.Second, "the page's event stream is not open", func() (bool, string) {
		s := eval[int](t, ctx, `window.kvsEvents?.source?.readyState ?? -1`)
		return s != 1, fmt.Sprintf("EventSource readyState %d", s)
	})
	p.stop()
	p.e.deleteStream(t, p.arn)
	time.Sleep(2 * time.Second)
	fp.setDown(false)
	var s playerState
	consoleWait(t, 20*time.Second, "the page says the stream is gone", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return strings.Contains(s.Notice, "does not exist"), fmt.Sprintf("%s; %d session requests so far", s, rc.total("/getHLSStreamingSessionURL"))
	})
	before := rc.total("/getHLSStreamingSessionURL")
	time.Sleep(4 * time.Second)
	if d := rc.total("/getHLSStreamingSessionURL") - before; d > 0 {
		t.Errorf("%d session requests in 4 s after the page said the stream is gone", d)
	}
}

// TestConsoleListAfterProxyError: kvs behind a reverse proxy restarts, and for a few seconds the
// proxy answers 502. The stream list must go on following the server's events once it is back:
// EventSource gives up for good on an HTTP error (it reconnects only after network errors), and
// the list, which does not poll, never showed a stream created after that.
func TestConsoleListAfterProxyError(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "before", 24)
	ts, fp := newFlakyProxy(t, e)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(ts.URL+"/"))
	open := func() (bool, string) {
		s := eval[int](t, ctx, `window.kvsEvents?.source?.readyState ?? -1`)
		return s == 1, fmt.Sprintf("EventSource readyState %d", s)
	}
	consoleWait(t, 10*time.Second, "the page's event stream is open", open)
	fp.setDown(true)
	consoleWait(t, 10*time.Second, "the page's event stream is not open", func() (bool, string) {
		ok, s := open()
		return !ok, s
	})
	time.Sleep(3 * time.Second) // the browser tries again (retry: 2000) and gets 502
	fp.setDown(false)
	e.createStream(t, "after", 24)
	consoleWait(t, 30*time.Second, "the stream created after the proxy's 502 shows", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream="after"]').length`)
		_, s := open()
		return n == 1, fmt.Sprintf("%d rows; %s", n, s)
	})
}

// TestConsoleLongStreamNames: stream names are up to 256 characters of letters, digits, '.', '-'
// and '_', with nowhere to break a line. The stream list and a stream's page must still fit the
// window, on a desktop and on a phone (390 px), with no sideways scrolling of the page or of the
// list (where Delete went out of sight), and the name's link must open its page.
func TestConsoleLongStreamNames(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	long := strings.Repeat("site-a.building_3.", 14) + "cam-" // 256 characters
	if len(long) != 256 {
		t.Fatalf("name of %d characters", len(long))
	}
	medium := "site-a.building_3.floor-2.camera-entrance-north-0001" // 52
	e.createStream(t, long, 24)
	e.createStream(t, medium, 24)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
	for _, vp := range []struct {
		name  string
		width int64
		emu   chromedp.Action[chromedp.Void]
	}{
		{"desktop", 1280, chromedp.EmulateViewport(1280, 900)},
		{"phone", 390, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2))},
	} {
		consoleDo(t, ctx, "emulate a "+vp.name, vp.emu)
		for _, name := range []string{long, medium} {
			consoleDo(t, ctx, "open the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
			link := `document.querySelector('#streams tr[data-stream="` + name + `"] a')`
			consoleWait(t, 10*time.Second, "the list shows the stream", func() (bool, string) {
				return eval[bool](t, ctx, `!!`+link), "no row"
			})
			fits := func(page string) {
				if w := eval[int64](t, ctx, `document.documentElement.scrollWidth`); w > vp.width {
					t.Errorf("%s, %s, %d characters: the page is %d px wide in a %d px window", vp.name, page, len(name), w, vp.width)
				}
				if n := eval[int](t, ctx, `[...document.querySelectorAll('.scroll, .scroll-x')].filter((e) => e.scrollWidth > e.clientWidth).length`); n > 0 {
					t.Errorf("%s, %s, %d characters: %d tables scroll sideways", vp.name, page, len(name), n)
				}
			}
			fits("stream list")
			consoleDo(t, ctx, "open the stream page", chromedp.Evaluate[chromedp.Void](link+`.click()`))
			consoleWait(t, 10*time.Second, "the stream page shows", func() (bool, string) {
				c := eval[string](t, ctx, `document.querySelector('#crumb').textContent`)
				return strings.HasSuffix(c, name) && eval[bool](t, ctx, `!!document.querySelector('#timeline')`), c
			})
			fits("stream page")
		}
	}
}

// TestConsoleManyStreamsOneLive: a list of 100 streams, one of them live. Each of its fragments
// listed every stream's fragments again (within 5 s): 100 ListFragments calls every 5 s for as
// long as the list is open, for one row's change (with 200 streams, 400 calls in 12 s). Only the
// row of the stream that moved is listed again.
func TestConsoleManyStreamsOneLive(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	for i := range 99 {
		e.createStream(t, fmt.Sprintf("idle-%03d", i), 24)
	}
	e.createStream(t, "live", 24)
	t.Cleanup(livePut(t, e, "live", loadClip(t, "h264.mkv"), time.Now().Add(-5*time.Second).UnixMilli()))
	ts, rc := countRequests(t, e.srv)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(ts.URL+"/"))
	consoleWait(t, 20*time.Second, "the list shows every stream, the live one with its last fragment", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#streams tbody tr').length`)
		ago := eval[string](t, ctx, `document.querySelector('#streams tr[data-stream="live"] .ago')?.textContent ?? ''`)
		return n == 100 && strings.HasSuffix(ago, " s ago"), fmt.Sprintf("%d rows, live %q", n, ago)
	})
	// A fragment that came while the list was first built lists again once: let that end (a
	// quiet second alone is not enough: a busy machine's browser may pause a listing longer, and
	// the rest of its calls then came in the 7 s below, counted with no full list).
	consoleWait(t, 20*time.Second, "no listing in progress and no ListFragments call for a second", func() (bool, string) {
		n := rc.total("/listFragments")
		time.Sleep(time.Second)
		lists, listed := eval[int](t, ctx, `window.kvsEvents.lists`), eval[int](t, ctx, `window.kvsEvents.listed`)
		return lists == listed && rc.total("/listFragments") == n, fmt.Sprintf("%d calls, %d listings started, %d listed", n, lists, listed)
	})
	// The list is listed whole again after the event connection opens again (a busy machine's
	// server may drop it) or a stream starts or ends an upload: such full lists are allowed,
	// 100 calls each, but no fragment of the live stream may cause one. The live stream's
	// fragments come every second or two, so 7 s hold one that would (5 s debounce).
	before, lists0, opens0 := rc.total("/listFragments"), eval[int](t, ctx, `window.kvsEvents.lists`), eval[int](t, ctx, `window.kvsEvents.opens`)
	time.Sleep(7 * time.Second)
	lists, opens := eval[int](t, ctx, `window.kvsEvents.lists`)-lists0, eval[int](t, ctx, `window.kvsEvents.opens`)-opens0
	events := eval[[]string](t, ctx, `window.kvsEvents.received`)
	others := 0
	for _, ev := range events {
		if !strings.HasPrefix(ev, "fragment.persisted ") {
			others++
		}
	}
	if n := rc.total("/listFragments") - before; n > 20+100*lists || lists > opens+others {
		t.Errorf("%d ListFragments calls and %d full lists in 7 s with one live stream of 100 (event connections opened %d, other events %d), want a few calls and no full list for a fragment; events %q",
			n, lists, opens, others, events)
	}
	rate := eval[string](t, ctx, `document.querySelector('#streams tr[data-stream="live"] td:nth-child(5)').textContent`)
	if !strings.HasSuffix(rate, "kbit/s") {
		t.Errorf("the live stream's data rate is %q, want … kbit/s", rate)
	}
}

// TestConsoleSeekBackWithVideoControls: a user drags the video's own seek bar back into the media
// the live player holds. The player must stay there and play on from it: it took any position
// more than 8 s behind the newest media for lag and jumped back to the live edge at once.
func TestConsoleSeekBackWithVideoControls(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	_, ctx := liveCam(t, 20*time.Second, "/#/stream/cam")
	var s playerState
	consoleWait(t, 30*time.Second, "the live player plays and holds 12 s before the playhead", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Frames > 0 && s.HeldFrom > 0 && s.Producer-s.HeldFrom > 12, s.String()
	})
	target := s.Producer - 10
	consoleDo(t, ctx, "seek back 10 s as the seek bar does", chromedp.Evaluate[chromedp.Void](
		fmt.Sprintf(`document.querySelector('#player').currentTime = %f - Number(document.querySelector('#player').dataset.origin)`, target)))
	consoleWait(t, 10*time.Second, "the player plays from there", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Producer > target+1, s.String()
	})
	time.Sleep(time.Second)
	s = eval[playerState](t, ctx, playerStateJS)
	if s.Producer > target+4 {
		t.Errorf("after a seek to %.3f, 2 s later the player is at %.3f (%.1f s further): it went back to live; %s", target, s.Producer, s.Producer-target, s)
	}
	if s.Mode == "live" {
		t.Errorf("the mode says %q after a seek 10 s back", s.Mode)
	}
}

// TestConsoleUnplayableCodec: a VP8 stream, which HLS cannot carry. The page says why it cannot
// play it, and its state readout must not go on saying "loading".
func TestConsoleUnplayableCodec(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "vp8", 24)
	t.Cleanup(livePut(t, e, "vp8", loadClip(t, "webm_vp8.webm"), time.Now().Add(-10*time.Second).UnixMilli()))
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(e.ts.URL+"/#/stream/vp8"))
	var s playerState
	consoleWait(t, 20*time.Second, "the page says why it cannot play the stream", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return strings.Contains(s.Notice, "V_VP8"), s.String()
	})
	time.Sleep(time.Second) // the readout is updated every 250 ms
	if state := eval[string](t, ctx, `document.querySelector('#st-state').textContent`); state == "loading" {
		t.Errorf("state %q beside the notice %q", state, s.Notice)
	}
}

// TestConsoleInitSegmentHiccup: a proxy in front of kvs answers one request with 502, and it is
// the player's request for the init segment (a new session's, after a renewal, or the first).
// Playback must go on: the player retried a playlist or a media fragment that failed, but
// an init segment that failed ended playback for good ("Playback: …: 502"), until a reload.
func TestConsoleInitSegmentHiccup(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	var failed atomic.Bool
	p := playingCam(t, func(e *mediaEnv) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/getMP4InitFragment.mp4") && failed.CompareAndSwap(false, true) {
				http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
				return
			}
			e.srv.ServeHTTP(w, r)
		})
	})
	if !failed.Load() {
		t.Fatal("the player played without asking for an init segment")
	}
	s := eval[playerState](t, p.ctx, playerStateJS)
	if s.Notice != "" {
		t.Errorf("notice %q", s.Notice)
	}
}
