package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
)

// TestConsoleLiveStartsWhenMediaArrives: a stream page opened before its producer sends anything
// (a new stream, or one idle for over 30 s: LIVE sessions are refused then) must start playing
// live once fragments arrive, as the timeline and fragment list below it do.
func TestConsoleLiveStartsWhenMediaArrives(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "later", 24)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(e.ts.URL+"/#/stream/later"))
	consoleWait(t, 10*time.Second, "the page's event stream is open", func() (bool, string) {
		return eval[bool](t, ctx, `window.kvsEvents?.source?.readyState === 1`), "not open"
	})
	time.Sleep(3 * time.Second) // the page has asked for a LIVE session, and been refused
	t.Logf("before the producer: %s", eval[playerState](t, ctx, playerStateJS))
	t.Cleanup(livePut(t, e, "later", loadClip(t, "h264.mkv"), time.Now().UnixMilli()))
	consoleWait(t, 10*time.Second, "the fragment list shows the new fragments", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#fragments tbody tr').length`)
		return n >= 2, fmt.Sprintf("%d rows", n)
	})
	consoleWait(t, 20*time.Second, "the live player plays once media arrives", func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
}

// TestConsoleRevisitStreamPage: going back and forth between the stream list and a stream's page
// is ordinary use. Each visit asked for a new LIVE session, and a stream has at most 10 at once,
// each for its 300 s Expires: the 11th visit within 5 minutes showed ClientLimitExceededException
// for good. The page keeps its LIVE session for the next visit: three visits, one session.
func TestConsoleRevisitStreamPage(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e, ctx := liveCam(t, 20*time.Second, "/")
	for visit := 1; visit <= 3; visit++ {
		consoleDo(t, ctx, "open the stream page", chromedp.Evaluate[chromedp.Void](`location.hash = '#/stream/cam'`))
		consoleWait(t, 20*time.Second, fmt.Sprintf("visit %d: the live player plays", visit), func() (bool, string) {
			s := eval[playerState](t, ctx, playerStateJS)
			if s.Notice != "" {
				t.Fatalf("visit %d: %s", visit, s)
			}
			return !s.Paused && s.Frames > 0, s.String()
		})
		consoleDo(t, ctx, "back to the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
	}
	p := e.srv.playback
	p.mu.Lock()
	n := len(p.issued["cam"])
	p.mu.Unlock()
	if n != 1 {
		t.Errorf("three visits of the stream's page took %d HLS sessions, want 1 (a stream has 10 at most)", n)
	}
}

// liveCam starts a server with a stream cam fed in real time, with history of media before now,
// and opens path of its console in a new tab.
func liveCam(t *testing.T, history time.Duration, path string) (*mediaEnv, context.Context) {
	t.Helper()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	t.Cleanup(livePut(t, e, "cam", loadClip(t, "h264.mkv"), time.Now().Add(-history).UnixMilli()))
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open "+path, chromedp.Navigate(e.ts.URL+path))
	return e, ctx
}

// longFragments returns c with every `loops` loops of it in one fragment (c's 1 s fragments
// become one of about loops*period): a camera with a long keyframe interval.
func longFragments(c *clip, loops int) *clip {
	n := *c
	var all []mkv.Frame
	for l := range loops {
		for _, fr := range c.frags {
			for _, f := range fr {
				f.Timecode += int64(l) * c.period
				all = append(all, f)
			}
		}
	}
	n.frags = [][]mkv.Frame{all}
	n.period = int64(loops) * c.period
	return &n
}

// TestConsoleReplayLongFragments: a click on the timeline in the middle of a 10 s fragment that
// the player does not hold must play from about the time clicked, not from the next fragment.
// The user is in New York: the times shown, which they compare with their own clock, must be New
// York time or say which zone they are in (they were UTC without saying so).
func TestConsoleReplayLongFragments(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := longFragments(loadClip(t, "h264.mkv"), 2)
	base := time.Now().Add(-150 * time.Second).UnixMilli()
	t.Cleanup(livePut(t, e, "cam", c, base))
	// 3.5 s into the third fragment, some 110 s back: not in the live session's media.
	target := float64(c.fragTimecode(2, base))/1000 + 3.5
	t.Logf("fragments of %.1f s; target %.3f", float64(c.period)/1000, target)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "be a user in New York", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "America/New_York"})
		return err
	}))
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(e.ts.URL+"/#/stream/cam"))
	consoleWait(t, 20*time.Second, "the timeline shows the stream's history", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#timeline .frag').length`)
		from := eval[string](t, ctx, `document.querySelector('#timeline').dataset.from || ''`)
		return n > 0 && from != "" && strings.Contains(eval[string](t, ctx, `document.querySelector('#tl-start').textContent`), "-"), fmt.Sprintf("%d runs", n)
	})
	// A click (pointerdown, pointerup at the same x) at the target time, computed and sent in one go.
	chosen := eval[float64](t, ctx, fmt.Sprintf(`(() => {
	  const tl = document.querySelector('#timeline'), r = tl.getBoundingClientRect();
	  const x = r.left + (%f - +tl.dataset.from) / (+tl.dataset.to - +tl.dataset.from) * r.width;
	  tl.dispatchEvent(new PointerEvent('pointerdown', { clientX: x, clientY: r.top + 5, pointerId: 1, bubbles: true }));
	  tl.dispatchEvent(new PointerEvent('pointerup', { clientX: x, clientY: r.top + 5, pointerId: 1, bubbles: true }));
	  return +document.querySelector('#mode').dataset.t;
	})()`, target))
	t.Logf("the page chose %.3f", chosen)
	var s playerState
	consoleWait(t, 20*time.Second, "the replay plays", func() (bool, string) {
		s = eval[playerState](t, ctx, playerStateJS)
		return strings.HasPrefix(s.Mode, "replay") && !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
	if s.Producer < chosen-0.5 || s.Producer > chosen+1.5 {
		t.Errorf("clicked at %.3f: the replay plays from %.3f (%.1f s later): %s", chosen, s.Producer, s.Producer-chosen, s)
	}
	type shown struct{ Text, Local string }
	pos := eval[shown](t, ctx, `(() => { const c = document.querySelector('#st-time');
	  return { Text: c.textContent, Local: new Date(c.dataset.t * 1000).toLocaleTimeString('en-GB', { hour12: false }) }; })()`)
	if !strings.Contains(pos.Text, pos.Local) && !strings.Contains(pos.Text, "UTC") {
		t.Errorf("position %q: the user's clock says %s, and the page does not say it shows another zone", pos.Text, pos.Local)
	}
}

// TestConsolePlaysWhenOpenedByAnotherURL: a server started with --advertise-url (the URL clients
// are told, e.g. the proxy's) and its console opened by another URL of the same server (the
// node's own address, localhost on its machine). Every API call of the page goes to the page's
// origin and works; GetHLSStreamingSessionURL names the advertised URL, which the console's
// Content-Security-Policy (connect-src 'self') refused: the list showed the stream and the
// player only "Playback: Failed to fetch". The session lives on the server that answered the
// page, which the page's origin reaches.
func TestConsolePlaysWhenOpenedByAnotherURL(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem", func(c *Config) { c.AdvertiseURL = "https://kvs.example.invalid" })
	e.createStream(t, "cam", 24)
	t.Cleanup(livePut(t, e, "cam", loadClip(t, "h264.mkv"), time.Now().Add(-10*time.Second).UnixMilli()))
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(e.ts.URL+"/#/stream/cam"))
	consoleWait(t, 20*time.Second, "the live player plays", func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		if strings.Contains(s.Notice, "Playback:") {
			t.Fatalf("player: %s", s)
		}
		return !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
}

// TestConsoleListSkewedProducerClock: a producer whose clock is a few minutes behind (a camera
// without NTP, a recorded file sent with its own timestamps) sends in real time. The stream list
// says when the server last received a fragment and the data rate of the last minute, but chose
// the fragments by producer time within a minute of now: it showed "—" for both while the stream
// was live.
func TestConsoleListSkewedProducerClock(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	// A producer sending in real time by a clock 5 minutes behind.
	skewedPut(t, e, "cam", loadClip(t, "h264.mkv"), -5*time.Minute)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
	const rowJS = `[...document.querySelectorAll('#streams tr[data-stream="cam"] td')].map((td) => td.textContent)`
	consoleWait(t, 20*time.Second, "the stream list shows cam's last fragment and data rate", func() (bool, string) {
		row := eval[[]string](t, ctx, rowJS)
		return len(row) >= 5 && strings.HasSuffix(row[3], " s ago") && strings.HasSuffix(row[4], "kbit/s"), fmt.Sprintf("%q", row)
	})
}

// skewedPut is a producer sending clip c to stream in real time by a clock skew off the server's
// (negative: behind), from 3 s of history on: fragment n goes when its end by the producer's
// clock is past. It stops with the test.
func skewedPut(t *testing.T, e *mediaEnv, stream string, c *clip, skew time.Duration) {
	pc := e.startPut(t, stream)
	pc.write(c.header())
	go func() {
		for range pc.acks {
		}
	}()
	base := time.Now().Add(skew - 3*time.Second).UnixMilli()
	go func() {
		for n := 0; ; n++ {
			select {
			case <-t.Context().Done():
				return
			case <-time.After(time.Until(time.UnixMilli(c.fragTimecode(n+1, base)).Add(-skew))):
			}
			b, err := c.appendCluster(nil, n, base)
			if err != nil {
				return
			}
			if _, err := pc.pw.Write(b); err != nil {
				return
			}
		}
	}()
}

// TestConsoleStreamPageSkewedProducerClock: a camera whose clock is set to local time in a zone
// east of UTC sends timestamps 2 hours ahead. The stream page's timeline and fragment list are the
// last hour of media, but were chosen by producer time from an hour before the browser's now to
// a minute after it: both stayed empty while the stream was live.
func TestConsoleStreamPageSkewedProducerClock(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	skewedPut(t, e, "cam", loadClip(t, "h264.mkv"), 2*time.Hour)
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the stream page", chromedp.Navigate(e.ts.URL+"/#/stream/cam"))
	const stateJS = `(() => { const tl = document.querySelector('#timeline');
	  return { rows: document.querySelectorAll('#fragments tbody tr').length,
	    shown: [...tl.querySelectorAll('.frag')].filter((f) => { const l = parseFloat(f.style.left); return l >= 0 && l < 100; }).length,
	    from: Number(tl.dataset.from), to: Number(tl.dataset.to) }; })()`
	type state struct {
		Rows  int     `json:"rows"`
		Shown int     `json:"shown"`
		From  float64 `json:"from"`
		To    float64 `json:"to"`
	}
	consoleWait(t, 20*time.Second, "the fragment list and the timeline show the live fragments", func() (bool, string) {
		s := eval[state](t, ctx, stateJS)
		return s.Rows >= 2 && s.Shown >= 1 && s.To-s.From < 3600, fmt.Sprintf("%+v", s)
	})
	consoleWait(t, 20*time.Second, "the live player plays", func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Frames > 0 && s.Producer > 0, s.String()
	})
}
