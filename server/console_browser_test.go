package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/openkvs/kvs/internal/testutil"
)

// browserScale is the device scale factor the browser draws pages at (startBrowser).
const browserScale = 0.5

// chromiumPath is Debian's Chromium, which the console browser tests drive over DevTools.
const chromiumPath = "/usr/bin/chromium"

// browser is the headless Chromium the browser tests of this package share: started by the first
// newBrowser, stopped by TestMain. Each test gets a tab in a browser context of its own (its own
// window, cookies and storage), so the tests stay independent while the package pays for one
// browser process, one GPU process and one network service instead of one of each per test.
var browser struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab; its cancellation stops the browser
	cancel func()
	dir    string // the profile
	err    error
}

// startBrowser starts the shared browser.
func startBrowser() {
	dir, err := os.MkdirTemp("", "kvs-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	browser.dir = dir
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Headless Chromium 156 still builds the browser's own UI: it preloads the omnibox popup
		// (two WebUI renderers) and loads the component extensions Debian's wrapper asks for.
		// No page under test uses them; without them the browser tests' Chromium CPU went from
		// 13.8–14.3 to 7.7–8.9 s (five browser tests, two runs each, summed over its processes as
		// scripts/test-cpu.sh sums them).
		chromedp.Flag("disable-features", "PreloadTopChromeWebUI,WebUIOmniboxPopup,WebUIOmniboxAimPopup"),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-component-extensions-with-background-pages", true),
		// Pages are laid out in a 1280x900 window of CSS pixels and drawn at half their pixels
		// (device scale factor 0.5): Chromium draws every frame of a playing video in software,
		// in every open tab (scripts/test-cpu.sh of the server test binary with -run Console,
		// two runs each: 13.9 busy core-seconds instead of 15.8-16.3). Screenshots are taken at
		// full size (screenshot).
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("force-device-scale-factor", strconv.FormatFloat(browserScale, 'f', -1, 64)),
		chromedp.UserDataDir(dir),
	)
	ctx, cancel := chromedp.NewContext(actx)
	browser.ctx, browser.cancel = ctx, func() { cancel(); cancelAlloc() }
	browser.err = chromedp.Do(ctx) // starts the browser
}

// stopBrowser stops the shared browser, if a test started it, and removes its profile.
func stopBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
	if browser.dir != "" {
		os.RemoveAll(browser.dir)
	}
}

// newBrowser returns a chromedp context for a new tab of the shared headless Chromium, in a
// browser context of its own; the test's cleanup closes it. The test is skipped without Chromium,
// or fails when KVS_REQUIRE_TOOLS=1.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	testutil.NeedTool(t, chromiumPath)
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	logged := make(chan struct{})
	t.Cleanup(func() { cancel(); <-logged })
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		close(logged)
		t.Fatalf("opening a tab in %s: %v", chromiumPath, err)
	}
	// Page errors and console messages go to the test log.
	messages := chromedp.Console(ctx)
	go func() {
		defer close(logged)
		for m, err := range messages {
			if err != nil {
				return
			}
			t.Logf("browser console: %s", m)
		}
	}()
	return ctx
}

// livePut is a producer sending clip c to stream in real time: fragments whose end is already
// past (history back to base) go at once, then each one as its end passes, timecodes growing
// as the clip loops. The returned func stops it.
func livePut(t *testing.T, e *mediaEnv, stream string, c *clip, base int64) func() {
	pc := e.startPut(t, stream)
	pc.write(c.header())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { // acks are not checked here: drain them so the connection never backs up
		for range pc.acks {
		}
	}()
	go func() {
		defer close(done)
		for n := 0; ; n++ {
			end := time.UnixMilli(c.fragTimecode(n+1, base))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(end)):
			}
			b, err := c.appendCluster(nil, n, base)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := pc.pw.Write(b); err != nil {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// artifactDir keeps screenshots: $KVS_ARTIFACTS when set (CI uploads it), else the test's
// temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("KVS_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// screenshot saves a full-page PNG of the tab as dir/name and logs its path.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	const widthJS = `document.documentElement.clientWidth`
	width := eval[int](t, ctx, widthJS)
	// The whole page at one image pixel per CSS pixel, or at the page's own device pixels where
	// those are more (a phone emulated at a scale of 2), however small the browser draws it.
	scale := max(1/eval[float64](t, ctx, `window.devicePixelRatio`), 1)
	var png []byte
	m, err := chromedp.Call(ctx, page.GetLayoutMetrics, cdp.Empty{})
	if err == nil {
		var r page.CaptureScreenshotResult
		r, err = chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format: page.CaptureScreenshotFormatPng, CaptureBeyondViewport: new(true), FromSurface: new(true),
			Clip: &page.Viewport{Width: m.CSSContentSize.Width, Height: m.CSSContentSize.Height, Scale: scale}})
		png = r.Data
	}
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	// The capture lays the page out at its full height for a moment, without the vertical
	// scrollbar: until that is undone (some 100-200 ms later), a centered page sits half a
	// scrollbar further right, and a click at a position measured now would land beside it.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		w := eval[int](t, ctx, widthJS)
		if w == width {
			break
		}
		if time.Now().After(end) {
			t.Logf("screenshot %s: the page is %d px wide after it, %d before", name, w, width)
			break
		}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// eval runs a JavaScript expression in the page and decodes its JSON value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// playerState is what the test reads of the stream page's player.
type playerState struct {
	CurrentTime float64   `json:"t"`
	Frames      int       `json:"frames"`
	Width       int       `json:"w"`
	Height      int       `json:"h"`
	Paused      bool      `json:"paused"`
	ReadyState  int       `json:"rs"`
	Buffered    string    `json:"buf"`
	Position    string    `json:"pos"`     // the page's producer-time readout
	Readout     float64   `json:"readout"` // the same, as epoch seconds (updated every 250 ms)
	Producer    float64   `json:"ptime"`   // producer time of currentTime: the MediaSource's origin + currentTime
	HeldFrom    float64   `json:"hfrom"`   // producer time where the buffered media starts (0: none)
	HeldTo      float64   `json:"hto"`     // and where it ends
	Holes       []float64 `json:"holes"`   // producer times where a buffered range ends before another
	Mode        string    `json:"mode"`
	Notice      string    `json:"notice"`
	Error       string    `json:"err"`
}

const playerStateJS = `(() => {
  const v = document.querySelector('#player');
  if (!v) return null;
  const q = v.getVideoPlaybackQuality();
  const b = [];
  for (let i = 0; i < v.buffered.length; i++) b.push(v.buffered.start(i).toFixed(2) + '-' + v.buffered.end(i).toFixed(2));
  return { t: v.currentTime, frames: q.totalVideoFrames, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
    rs: v.readyState, buf: b.join(' '), pos: document.querySelector('#st-time')?.textContent || '',
    readout: Number(document.querySelector('#st-time')?.dataset.t || 0), ptime: v.dataset.origin ? Number(v.dataset.origin) + v.currentTime : 0,
    hfrom: v.dataset.origin && b.length ? Number(v.dataset.origin) + v.buffered.start(0) : 0,
    hto: v.dataset.origin && b.length ? Number(v.dataset.origin) + v.buffered.end(b.length - 1) : 0,
    holes: v.dataset.origin ? b.slice(0, -1).map((_, i) => Number(v.dataset.origin) + v.buffered.end(i)) : [], mode: document.querySelector('#mode')?.textContent || '',
    notice: document.querySelector('#notice')?.textContent || '', err: v.error ? v.error.message : '' };
})()`

func (s playerState) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// consoleWait polls cond every 200 ms until it holds or deadline passes.
func consoleWait(t *testing.T, deadline time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(deadline)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(end) {
			t.Fatalf("after %v: %s; last state %s", deadline, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// consoleDo runs chromedp actions, failing the test on an error.
func consoleDo(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// consoleEnv is what the console browser tests share: a server whose clock can be moved on (skew,
// added to it, expires HLS sessions), two streams fed in real time (cam: H.264 with 30 s of
// history, then live; hevc: H.265 with 20 s), and a headless Chromium tab.
type consoleEnv struct {
	e        *mediaEnv
	ctx      context.Context
	dir      string        // where screenshots go
	base     int64         // cam's first producer time (Unix ms)
	hevcBase float64       // hevc's (Unix s)
	skew     *atomic.Int64 // nanoseconds
}

func newConsoleEnv(t *testing.T) *consoleEnv {
	t.Helper()
	ce := &consoleEnv{skew: new(atomic.Int64)}
	ce.e = newMediaEnv(t, "mem", func(c *Config) { c.Now = func() time.Time { return time.Now().Add(time.Duration(ce.skew.Load())) } })
	ce.e.createStream(t, "cam", 24)
	ce.e.createStream(t, "hevc", 24)
	h264, h265 := loadClip(t, "h264.mkv"), loadClip(t, "h265.mkv")
	ce.base = time.Now().Add(-30 * time.Second).UnixMilli() // 30 s of history, then live
	t.Cleanup(livePut(t, ce.e, "cam", h264, ce.base))
	ce.hevcBase = float64(time.Now().Add(-20*time.Second).UnixMilli()) / 1000
	t.Cleanup(livePut(t, ce.e, "hevc", h265, int64(ce.hevcBase*1000)))
	ce.ctx = newBrowser(t) // after the server and producers: its cleanup closes the tab first
	ce.dir = artifactDir(t)
	return ce
}

// nowSec is this machine's time in Unix seconds, as the console's producer times are.
func nowSec() float64 { return float64(time.Now().UnixMilli()) / 1000 }

// waitLivePlays opens cam's stream page (from the list when it shows, as a user would) and waits
// until its live player plays.
func (ce *consoleEnv) waitLivePlays(t *testing.T) playerState {
	t.Helper()
	ctx := ce.ctx
	if eval[bool](t, ctx, `!!document.querySelector('a[href="#/stream/cam"]')`) {
		consoleDo(t, ctx, "open the stream page", chromedp.Evaluate[chromedp.Void](`document.querySelector('a[href="#/stream/cam"]').click()`))
	} else {
		consoleDo(t, ctx, "open the stream page", chromedp.Navigate(ce.e.ts.URL+"/#/stream/cam"))
	}
	var first playerState
	consoleWait(t, 20*time.Second, "the live player starts playing", func() (bool, string) {
		first = eval[playerState](t, ctx, playerStateJS)
		return !first.Paused && first.Frames > 0 && first.Producer > 0, first.String()
	})
	t.Logf("playing: %s", first)
	return first
}

// TestConsoleBrowser drives the console in real headless Chromium (over DevTools, with
// chromedp) against a server with producers sending 1 s fragments in real time:
//
// the stream list shows each stream with its status, retention and last fragment, and follows
// the server's events (GET /events): streams created and deleted, new fragments.
//
// TestConsoleBrowserPlayer, TestConsoleBrowserRenew and TestConsoleBrowserPages check the rest,
// each with its own server and tab (of the one Chromium the package shares), in parallel with
// this one. Screenshots of each
// page go to $KVS_ARTIFACTS (else the test's temporary directory); their paths are logged.
func TestConsoleBrowser(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	ce := newConsoleEnv(t)
	e, ctx, dir := ce.e, ce.ctx, ce.dir

	t.Run("list", func(t *testing.T) {
		consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
		const rowJS = `[...document.querySelectorAll('#streams tr[data-stream="cam"] td')].map((td) => td.textContent)`
		var row []string
		consoleWait(t, 20*time.Second, "the stream list shows cam with its last fragment", func() (bool, string) {
			row = eval[[]string](t, ctx, rowJS)
			return len(row) >= 5 && strings.HasSuffix(row[3], " s ago"), fmt.Sprintf("%q", row)
		})
		if row[0] != "cam" || row[1] != "ACTIVE" || row[2] != "24 h" || !strings.HasSuffix(row[4], "kbit/s") {
			t.Errorf("stream list row %q, want cam, ACTIVE, 24 h, … s ago, … kbit/s", row)
		}
		var ago float64
		if _, err := fmt.Sscanf(row[3], "%f s ago", &ago); err != nil || ago > 15 {
			t.Errorf("last fragment %q, want a few seconds ago", row[3])
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream="hevc"]').length`); n != 1 {
			t.Errorf("stream list has %d rows for hevc, want 1", n)
		}
		screenshot(t, ctx, dir, "console-streams.png")
	})

	// The list follows the server's events (GET /events) instead of polling: a stream created or
	// deleted through the API shows at once, a stream's "last fragment" moves with its PERSISTED
	// fragments, and the page's EventSource saw the events.
	t.Run("events", func(t *testing.T) {
		if !eval[bool](t, ctx, `!!document.querySelector('#streams')`) {
			consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
		}
		consoleWait(t, 10*time.Second, "the page's event stream is open", func() (bool, string) {
			return eval[bool](t, ctx, `window.kvsEvents?.source?.readyState === 1`), "not open"
		})
		const lastJS = `Number(document.querySelector('#streams tr[data-stream="cam"] .ago')?.dataset.t || 0)`
		before := eval[float64](t, ctx, lastJS)
		arn := e.createStream(t, "sse-new", 1)
		// The list does not poll: the row can only come from the event. The wait is long only
		// for a loaded machine (3 s was once too short in a full parallel run).
		consoleWait(t, 15*time.Second, "the new stream's row shows", func() (bool, string) {
			n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream="sse-new"]').length`)
			return n == 1, fmt.Sprintf("%d rows", n)
		})
		// cam's next PERSISTED fragment may come up to a fragment's duration after sse-new's row:
		// wait for it rather than read the list once.
		consoleWait(t, 10*time.Second, "the page saw stream.created of sse-new and fragment.persisted of cam", func() (bool, string) {
			seen := eval[[]string](t, ctx, `window.kvsEvents.received`)
			return slices.Contains(seen, EventStreamCreated+" sse-new") && slices.Contains(seen, EventFragmentPersisted+" cam"), fmt.Sprintf("%q", seen)
		})
		e.deleteStream(t, arn)
		consoleWait(t, 15*time.Second, "the deleted stream's row goes", func() (bool, string) {
			n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream="sse-new"]').length`)
			return n == 0, fmt.Sprintf("%d rows", n)
		})
		consoleWait(t, 15*time.Second, "cam's last fragment moves on", func() (bool, string) {
			now := eval[float64](t, ctx, lastJS)
			return now > before, fmt.Sprintf("%.3f, was %.3f", now, before)
		})
	})

}

// TestConsoleBrowserPlayer: the stream page's live player plays (currentTime and the decoded frame
// count grow, the picture is 320x240, the position readout is recent producer time); a click on
// the timeline replays from that time, in the media the player holds without a new session,
// further back with a LIVE_REPLAY session; "Go live" returns to the live edge. (Apart from
// TestConsoleBrowser's list checks, so that the two run at once: each waits on real time.)
func TestConsoleBrowserPlayer(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	ce := newConsoleEnv(t)
	ctx, dir, base := ce.ctx, ce.dir, ce.base
	now := nowSec

	var live playerState
	t.Run("live", func(t *testing.T) {
		read := func() playerState { return eval[playerState](t, ctx, playerStateJS) }
		first := ce.waitLivePlays(t)
		consoleWait(t, 20*time.Second, "currentTime advances 3 s and frames decode", func() (bool, string) {
			live = read()
			return live.CurrentTime >= first.CurrentTime+3 && live.Frames >= first.Frames+40, live.String()
		})
		t.Logf("after: %s", live)
		if live.Width != 320 || live.Height != 240 {
			t.Errorf("video %dx%d, want 320x240", live.Width, live.Height)
		}
		if live.Producer < first.Producer+2.5 || live.Producer < now()-15 {
			t.Errorf("position %.3f (from %.3f), want advancing and recent producer time (now %.3f)", live.Producer, first.Producer, now())
		}
		if d := live.Readout - live.Producer; d < -1 || d > 1 {
			t.Errorf("position readout %.3f (%s), want about %.3f", live.Readout, live.Position, live.Producer)
		}
		if live.Error != "" || live.Notice != "" {
			t.Errorf("player error %q, notice %q", live.Error, live.Notice)
		}
		screenshot(t, ctx, dir, "console-stream.png")
	})

	// clickTimeline clicks the timeline at producer time target and returns the time the page
	// chose to replay from. The mouse goes over the timeline first, as a user's does while aiming:
	// the page then holds the timeline's span still (otherwise it follows now every few seconds),
	// so the span read next is the one the click maps through.
	clickTimeline := func(t *testing.T, target float64) float64 {
		t.Helper()
		type box struct{ X, Y, W, From, To float64 }
		const boxJS = `(() => { const tl = document.querySelector('#timeline'); const r = tl.getBoundingClientRect();
		  return { X: r.left, Y: r.top + r.height / 2, From: +tl.dataset.from, To: +tl.dataset.to, W: r.width }; })()`
		consoleDo(t, ctx, "scroll to the timeline", chromedp.Evaluate[chromedp.Void](`document.querySelector('#timeline').scrollIntoView({ block: 'center' })`))
		b := eval[box](t, ctx, boxJS)
		consoleDo(t, ctx, "move the mouse over the timeline", chromedp.MouseEvent(chromedp.MouseMoved, b.X+b.W/2, b.Y))
		consoleWait(t, 15*time.Second, "the timeline is under the mouse", func() (bool, string) {
			return eval[bool](t, ctx, `document.querySelector('#timeline').matches(':hover')`), "not hovered"
		})
		b = eval[box](t, ctx, boxJS)
		x := b.X + (target-b.From)/(b.To-b.From)*b.W
		consoleDo(t, ctx, "click the timeline", chromedp.MouseClickXY(x, b.Y))
		// Should the span move between reading it and the click all the same, the click maps x
		// through a span from b to the one read after it, and the time under a fixed x only grows.
		a := eval[box](t, ctx, boxJS)
		if a.From != b.From || a.To != b.To {
			t.Errorf("the timeline's span moved under the mouse: %.3f..%.3f, then %.3f..%.3f", b.From, b.To, a.From, a.To)
		}
		latest := a.From + (x-a.X)/a.W*(a.To-a.From)
		var chosen float64
		consoleWait(t, 15*time.Second, "the click starts a replay", func() (bool, string) {
			mode := eval[string](t, ctx, `document.querySelector('#mode').textContent + '|' + document.querySelector('#mode').dataset.t`)
			_, err := fmt.Sscanf(mode[strings.Index(mode, "|")+1:], "%f", &chosen)
			return strings.HasPrefix(mode, "replay from ") && err == nil && math.Abs(chosen-target) < 5, mode
		})
		if chosen < target-1.5 || chosen > max(target, latest)+1.5 {
			t.Errorf("the click chose %.3f, want about %.3f (timeline %.3f..%.3f, then %.3f..%.3f)", chosen, target, b.From, b.To, a.From, a.To)
		}
		consoleDo(t, ctx, "move the mouse off the timeline", chromedp.MouseEvent(chromedp.MouseMoved, 0, 0))
		return chosen
	}
	// replays checks that the player plays from chosen on, and stays behind live.
	replays := func(t *testing.T, chosen float64) {
		t.Helper()
		var first, s playerState
		consoleWait(t, 20*time.Second, "the replay plays from the chosen time", func() (bool, string) {
			first = eval[playerState](t, ctx, playerStateJS)
			return !first.Paused && first.Frames > 0 && first.Producer > chosen-0.5 && first.Producer < chosen+5, first.String()
		})
		consoleWait(t, 20*time.Second, "the replay advances 2 s", func() (bool, string) {
			s = eval[playerState](t, ctx, playerStateJS)
			return s.Producer >= first.Producer+2, s.String()
		})
		t.Logf("replay: chose %.3f, started at %.3f, now at %s", chosen, first.Producer, s)
		if d := s.Readout - s.Producer; d < -1 || d > 1 {
			t.Errorf("position readout %.3f (%s), want about %.3f", s.Readout, s.Position, s.Producer)
		}
		if s.Producer > chosen+4 || s.Producer > now()-4 {
			t.Errorf("replay position %.3f, want about 2 s after %.3f (now %.3f)", s.Producer, chosen, now())
		}
	}
	src := func(t *testing.T) string { return eval[string](t, ctx, `document.querySelector('#player').src`) }

	t.Run("seek", func(t *testing.T) {
		if live.Frames == 0 {
			t.Skip("the live player did not play")
		}
		// A click on media the player holds seeks in it (the same MediaSource, no new session).
		before := src(t)
		// Aim 6 s back, or further when the player lags: a click within 3 s (LIVE_DELAY) of the
		// newest media goes live, and a time the player does not hold yet needs a new session.
		// Just before a hole between buffered ranges when there is one (the clip's loops leave
		// 60 ms between them): the player steps over such holes, so that media is held too, and a
		// seek this close to a hole must not leave the player stuck.
		var target float64
		var held playerState
		consoleWait(t, 20*time.Second, "the live player holds media 4.5 s before its newest", func() (bool, string) {
			held = eval[playerState](t, ctx, playerStateJS)
			target = min(now()-6, held.HeldTo-4.5)
			return target >= held.HeldFrom+1, held.String()
		})
		near := ""
		for _, h := range held.Holes {
			if h-0.05 >= held.HeldFrom+0.5 && h-0.05 <= target {
				target, near = h-0.05, " (50 ms before a hole)"
				break
			}
		}
		t.Logf("aiming at %.3f%s: %s", target, near, held)
		replays(t, clickTimeline(t, target))
		if src(t) != before {
			t.Errorf("a seek into buffered media replaced the player (src %s, was %s)", src(t), before)
		}
		// A click further back (more than 20 s behind live) starts a LIVE_REPLAY session there.
		replays(t, clickTimeline(t, float64(base)/1000+8.5))
		if src(t) == before {
			t.Errorf("a seek to %.3f kept the live session", float64(base)/1000+8.5)
		}
		screenshot(t, ctx, dir, "console-stream-replay.png")

		// "Go live" leaves the replay for the live edge.
		consoleDo(t, ctx, "click Go live", chromedp.Evaluate[chromedp.Void](`document.querySelector('#golive').click()`))
		consoleWait(t, 20*time.Second, "Go live plays recent media again", func() (bool, string) {
			s := eval[playerState](t, ctx, playerStateJS)
			return s.Mode == "live" && !s.Paused && s.Producer > now()-15, s.String()
		})
	})
}

// TestConsoleBrowserRenew: when every HLS session expires (the server's clock jumps past their
// Expires of 300 s), the live player gets a new one and plays on, past media that did not exist
// before the jump.
func TestConsoleBrowserRenew(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	ce := newConsoleEnv(t)
	ce.waitLivePlays(t)
	ce.skew.Add(int64(301 * time.Second))
	jumped := nowSec()
	consoleWait(t, 20*time.Second, "the player plays on with a new session", func() (bool, string) {
		s := eval[playerState](t, ce.ctx, playerStateJS)
		return s.Mode == "live" && !s.Paused && s.Producer > jumped+1, s.String()
	})
}

// TestConsoleBrowserPages: an H.265 stream shows the "cannot decode H.265" notice in place of the
// video; thumbnails and each stream's latest image load (the server decodes them, also H.265);
// both pages fit a phone-sized viewport (390x844) with no sideways scrolling.
func TestConsoleBrowserPages(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	ce := newConsoleEnv(t)
	ctx, dir, base, hevcBase, now := ce.ctx, ce.dir, ce.base, ce.hevcBase, nowSec
	consoleDo(t, ctx, "open the console", chromedp.Navigate(ce.e.ts.URL+"/"))

	t.Run("h265", func(t *testing.T) {
		consoleDo(t, ctx, "open the H.265 stream", chromedp.Evaluate[chromedp.Void](`location.hash = '#/stream/hevc'`))
		type view struct {
			Notice  string
			VideoH  float64
			Visible bool
		}
		var v view
		consoleWait(t, 20*time.Second, "the H.265 notice shows", func() (bool, string) {
			v = eval[view](t, ctx, `({ Notice: document.querySelector('#notice').textContent,
			  VideoH: document.querySelector('#player').getBoundingClientRect().height,
			  Visible: document.querySelector('#player').checkVisibility() })`)
			return strings.Contains(v.Notice, "cannot decode H.265"), fmt.Sprintf("%+v", v)
		})
		if v.Visible || v.VideoH != 0 {
			t.Errorf("the video box is still shown (%+v), want the notice in its place", v)
		}
		screenshot(t, ctx, dir, "console-stream-h265.png")
	})

	// Pictures: thumbnails above each stream page's timeline (also for H.265, which this browser
	// cannot play: the server decodes them), and each stream's latest image in the list. Every
	// <img> must have loaded a picture of the size asked for (HeightPixels 54, 40; the width
	// from the clips' 4:3), at a time where media is stored.
	t.Run("thumbnails", func(t *testing.T) {
		testutil.NeedTool(t, "ffmpeg") // the server's GetImages decoder here
		type pic struct {
			T    float64
			W, H int
		}
		const thumbsJS = `[...document.querySelectorAll('#thumbs img')].filter((i) => i.complete && i.naturalWidth > 0)
		  .map((i) => ({ T: +i.dataset.t, W: i.naturalWidth, H: i.naturalHeight }))`
		for _, page := range []struct {
			hash, shot string
			from       float64 // the stream's media starts here (producer time)
		}{{"#/stream/hevc", "console-thumbnails-h265.png", hevcBase}, {"#/stream/cam", "console-thumbnails.png", float64(base) / 1000}} {
			consoleDo(t, ctx, "open "+page.hash, chromedp.Evaluate[chromedp.Void](`location.hash = '`+page.hash+`'`))
			var pics []pic
			consoleWait(t, 30*time.Second, page.hash+": at least 4 thumbnails load", func() (bool, string) {
				pics = eval[[]pic](t, ctx, thumbsJS)
				return len(pics) >= 4, fmt.Sprintf("%+v", pics)
			})
			for _, p := range pics {
				if p.W != 72 || p.H != 54 || p.T < page.from-0.001 || p.T > now() {
					t.Errorf("%s: thumbnail %+v, want 72x54 between %.3f and now", page.hash, p, page.from)
				}
			}
			screenshot(t, ctx, dir, page.shot)
		}
		consoleDo(t, ctx, "open the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
		for _, stream := range []string{"cam", "hevc"} {
			var p pic
			consoleWait(t, 30*time.Second, stream+"'s latest image loads in the list", func() (bool, string) {
				p = eval[pic](t, ctx, `(() => { const i = document.querySelector('#streams tr[data-stream="`+stream+`"] img.thumb');
				  return i && i.complete ? { W: i.naturalWidth, H: i.naturalHeight } : { W: 0, H: 0 }; })()`)
				return p.W > 0, fmt.Sprintf("%+v", p)
			})
			if p.W != 53 || p.H != 40 {
				t.Errorf("%s's latest image is %dx%d, want 53x40", stream, p.W, p.H)
			}
		}
		screenshot(t, ctx, dir, "console-streams.png")
	})

	t.Run("phone", func(t *testing.T) {
		consoleDo(t, ctx, "emulate a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		for _, page := range []struct{ hash, shot string }{{"#/stream/cam", "console-stream-phone.png"}, {"#/", "console-streams-phone.png"}} {
			consoleDo(t, ctx, "open "+page.hash, chromedp.Evaluate[chromedp.Void](`location.hash = '`+page.hash+`'`))
			consoleWait(t, 20*time.Second, page.hash+" fills in", func() (bool, string) {
				s := eval[string](t, ctx, `document.querySelector('#st-size')?.textContent ?? document.querySelector('#streams tr[data-stream="cam"] td:nth-child(4)')?.textContent ?? ''`)
				return s == "320x240" || strings.HasSuffix(s, " s ago"), s
			})
			if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
				t.Errorf("%s is %d px wide on a 390 px phone: it scrolls sideways", page.hash, w)
			}
			if n := eval[int](t, ctx, `[...document.querySelectorAll('.scroll, .scroll-x')].filter((e) => e.scrollWidth > e.clientWidth).length`); n > 0 {
				t.Errorf("%s: %d tables are cut off on a 390 px phone (they scroll sideways)", page.hash, n)
			}
			screenshot(t, ctx, dir, page.shot)
		}
	})
}

// With GetImages busy (one request at a time), the stream list still shows every stream's latest
// picture: it asks for at most two at once and asks again for one the server turned away
// (ClientLimitExceededException), for streams that get no new fragment to try again on.
func TestConsoleBrowserBusyImages(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem", func(c *Config) { c.MaxImageRequests = 1 })
	c := loadClip(t, "h264.mkv")
	base := time.Now().Add(-10 * time.Second).UnixMilli()
	names := []string{"a", "b", "c", "d", "e"}
	for _, name := range names {
		e.createStream(t, name, 24)
		putFragments(t, e, name, c, base, 2)
	}
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
	for _, name := range names {
		consoleWait(t, 30*time.Second, name+"'s latest image shows in the list", func() (bool, string) {
			n := eval[int](t, ctx, `[...document.querySelectorAll('#streams tr[data-stream="`+name+`"] img.thumb')].filter((i) => i.complete && i.naturalWidth > 0).length`)
			return n == 1, fmt.Sprintf("%d images", n)
		})
	}
	screenshot(t, ctx, artifactDir(t), "console-busy-images.png")
}
