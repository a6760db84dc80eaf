package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/openkvs/kvs/internal/testutil"
)

// putFragments sends fragments 0 to n-1 of clip c to stream with one PutMedia, timecodes from
// base (Unix ms), and waits until each is PERSISTED.
func putFragments(t *testing.T, e *mediaEnv, stream string, c *clip, base int64, n int) {
	t.Helper()
	pc := e.startPut(t, stream)
	pc.write(c.header())
	for i := range n {
		pc.write(c.cluster(t, i, base))
	}
	pc.pw.Close()
	persisted := 0
	for a := range pc.acks {
		if a.EventType == ackPersisted {
			persisted++
		}
	}
	if persisted != n {
		t.Fatalf("stream %s: %d fragments PERSISTED, want %d", stream, persisted, n)
	}
}

// imageAsks serves h and records the stream of every GetImages request, in order.
type imageAsks struct {
	mu      sync.Mutex
	streams []string
}

func askedImages(t *testing.T, h http.Handler) (*httptest.Server, *imageAsks) {
	ia := &imageAsks{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/getImages" {
			b, _ := io.ReadAll(r.Body)
			var req struct{ StreamName string }
			json.Unmarshal(b, &req)
			ia.mu.Lock()
			ia.streams = append(ia.streams, req.StreamName)
			ia.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts, ia
}

func (ia *imageAsks) list() []string {
	ia.mu.Lock()
	defer ia.mu.Unlock()
	return slices.Clone(ia.streams)
}

// listView is what the test reads of the stream list: the rows on screen, and the streams
// whose row shows a loaded picture.
type listView struct {
	Rows    int
	Visible []string
	Loaded  []string
	Heights []float64 // of the rows on screen
}

const listViewJS = `(() => {
  const rows = [...document.querySelectorAll('#streams tbody tr')];
  const on = rows.filter((r) => { const b = r.getBoundingClientRect(); return b.bottom > 0 && b.top < innerHeight; });
  return { Rows: rows.length, Visible: on.map((r) => r.dataset.stream), Heights: on.map((r) => r.getBoundingClientRect().height),
    Loaded: rows.filter((r) => [...r.querySelectorAll('img.thumb')].some((i) => i.complete && i.naturalWidth > 0)).map((r) => r.dataset.stream) };
})()`

// TestConsoleListPicturesOnScreenOnly: each row of the stream list asked GetImages for its
// stream's latest picture (an H.264 decode on the server) as soon as it was built, on screen or
// not: a list of hundreds of streams kept the server decoding pictures nobody saw, and the rows
// on screen got theirs behind that queue. Of a list of 40 streams in a small window, only the
// rows on screen may ask; scrolled to the end, the last rows get their pictures.
func TestConsoleListPicturesOnScreenOnly(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	c := loadClip(t, "h264.mkv")
	base := time.Now().Add(-10 * time.Second).UnixMilli()
	var names []string
	for i := range 40 {
		name := fmt.Sprintf("s-%02d", i)
		names = append(names, name)
		e.createStream(t, name, 24)
		putFragments(t, e, name, c, base, 1)
	}
	ts, ia := askedImages(t, e.srv)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console in a small window", chromedp.EmulateViewport(1280, 600), chromedp.Navigate(ts.URL+"/"))
	var v listView
	shown := func(what string) {
		consoleWait(t, 30*time.Second, what, func() (bool, string) {
			v = eval[listView](t, ctx, listViewJS)
			for _, n := range v.Visible {
				if !slices.Contains(v.Loaded, n) {
					return false, fmt.Sprintf("%+v", v)
				}
			}
			return v.Rows == len(names) && len(v.Visible) > 0, fmt.Sprintf("%+v", v)
		})
	}
	shown("every row on screen shows its picture")
	if len(v.Visible) >= len(names)/2 {
		t.Fatalf("%d of %d rows on screen, want a list longer than the window: %+v", len(v.Visible), len(names), v)
	}
	time.Sleep(2 * time.Second) // requests for rows off screen, if any, come meanwhile
	v = eval[listView](t, ctx, listViewJS)
	var off []string
	for _, n := range ia.list() {
		if !slices.Contains(v.Visible, n) && !slices.Contains(off, n) {
			off = append(off, n)
		}
	}
	if len(off) > 0 {
		t.Errorf("GetImages asked for %d streams whose rows are not on screen (%q); on screen %q (row heights %v)", len(off), off, v.Visible, v.Heights)
	}
	top := v.Visible
	consoleDo(t, ctx, "scroll to the end", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, document.documentElement.scrollHeight)`))
	shown("the rows on screen at the end show their pictures")
	if !slices.Contains(v.Visible, names[len(names)-1]) {
		t.Errorf("the last row is not on screen after scrolling to the end: %+v", v)
	}
	// The scroll jumped over the rows between: they were never on screen, so never asked.
	time.Sleep(time.Second)
	for _, n := range ia.list() {
		if !slices.Contains(top, n) && !slices.Contains(v.Visible, n) {
			t.Errorf("GetImages asked for %s, whose row was never on screen (at the top %q, at the end %q)", n, top, v.Visible)
			break
		}
	}
	t.Logf("GetImages asked for %d pictures of %d streams; %d rows on screen at the end", len(ia.list()), len(names), len(v.Visible))
	screenshot(t, ctx, artifactDir(t), "console-streams-scrolled.png")
}

// TestConsoleListPictureNotOverwrittenByOlder: a row's picture request that comes back after a
// newer fragment's picture is in the row (its request was slower) must not put its older picture
// back: a finished picture goes into the row now in the list, so the stale one replaced the newer
// and stayed there until the stream's next fragment (for a camera that stopped, for good).
func TestConsoleListPictureNotOverwrittenByOlder(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	c, e := loadClip(t, "h264.mkv"), newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	base := time.Now().Add(-60 * time.Second).UnixMilli() // two fragments, 30 s apart
	putFragments(t, e, "cam", c, base, 1)
	release, held, served := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var asks sync.Mutex
	n := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/getImages" {
			asks.Lock()
			n++
			first := n == 1
			asks.Unlock()
			if first { // the first fragment's picture: slow, it comes back last
				close(held)
				<-release
				defer close(served)
			}
		}
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(ts.URL+"/"))
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the row never asked for its picture")
	}
	putFragments(t, e, "cam", c, base+30_000, 1)
	const titleJS = `document.querySelector('#streams tbody tr[data-stream="cam"] img.thumb')?.title ?? ''`
	var newer string
	consoleWait(t, 30*time.Second, "the row shows the second fragment's picture", func() (bool, string) {
		newer = eval[string](t, ctx, titleJS)
		return newer != "", newer
	})
	close(release)
	<-served
	time.Sleep(2 * time.Second) // the first fragment's picture comes back meanwhile
	if got := eval[string](t, ctx, titleJS); got != newer {
		t.Fatalf("the row's picture is of %q after the first fragment's slow picture came back, want the newer one's, %q", got, newer)
	}
}

// TestConsoleListPictureKeptAcrossListing: a picture that comes back while a listing of the
// streams is still being built (its rows wait for every stream's ListFragments) shows in the row
// that listing puts on screen: that row was built before it came, with the picture before, and
// the new picture was lost until the stream's next fragment (for a camera that stopped, whose
// upload's end is what lists the streams again, for good).
func TestConsoleListPictureKeptAcrossListing(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	c, e := loadClip(t, "h264.mkv"), newMediaEnv(t, "mem")
	base := time.Now().Add(-60 * time.Second).UnixMilli() // cam's two fragments, 30 s apart
	for _, name := range []string{"cam", "slow"} {
		e.createStream(t, name, 24)
		putFragments(t, e, name, c, base, 1)
	}
	var hold sync.Mutex // held: slow's ListFragments wait, and with them every listing
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/listFragments" {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if bytes.Contains(b, []byte(`"slow"`)) {
				hold.Lock()
				hold.Unlock() //nolint:staticcheck // waits for the test to let it through
			}
		}
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(ts.URL+"/"))
	const titleJS = `document.querySelector('#streams tbody tr[data-stream="cam"] img.thumb')?.title ?? ''`
	var first, second string
	consoleWait(t, 30*time.Second, "cam's row shows its picture", func() (bool, string) {
		first = eval[string](t, ctx, titleJS)
		return first != "", first
	})
	hold.Lock()
	held := true
	defer func() {
		if held {
			hold.Unlock()
		}
	}()
	putFragments(t, e, "cam", c, base+30_000, 1) // its upload's start and end list the streams again
	consoleWait(t, 30*time.Second, "cam's row shows its second fragment's picture", func() (bool, string) {
		second = eval[string](t, ctx, titleJS)
		return second != first, second
	})
	held = false
	hold.Unlock() // the listings come on screen
	time.Sleep(2 * time.Second)
	if got := eval[string](t, ctx, titleJS); got != second {
		t.Fatalf("cam's row shows the picture of %q once the listing came on screen, want its newest, %q (before: %q)", got, second, first)
	}
}
