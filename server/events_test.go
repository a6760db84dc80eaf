package server

import (
	"bufio"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// delivery is one webhook POST as the test receiver saw it.
type delivery struct {
	id, attempt int
	typ         string
	signed      bool // X-Kvs-Signature matches the body
	ev          Event
}

// hookReceiver is a webhook endpoint that answers 503 to the first failFirst attempts of each
// event and 200 after, recording every POST.
type hookReceiver struct {
	t         *testing.T
	secret    string
	failFirst int
	ts        *httptest.Server

	mu   sync.Mutex
	all  []delivery
	ok   []delivery
	got  chan struct{} // a send per delivered event
	hang chan struct{} // when not nil, every POST waits for it (a dead receiver)
}

func newHookReceiver(t *testing.T, secret string, failFirst int) *hookReceiver {
	h := &hookReceiver{t: t, secret: secret, failFirst: failFirst, got: make(chan struct{}, 1000)}
	h.ts = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.ts.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	if h.hang != nil {
		select {
		case <-h.hang:
		case <-r.Context().Done():
		}
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		h.t.Error(err)
		return
	}
	d := delivery{typ: r.Header.Get("X-Kvs-Event")}
	d.id, _ = strconv.Atoi(r.Header.Get("X-Kvs-Event-Id"))
	d.attempt, _ = strconv.Atoi(r.Header.Get("X-Kvs-Delivery-Attempt"))
	d.signed = hmac.Equal([]byte(r.Header.Get("X-Kvs-Signature")), []byte(SignWebhook([]byte(h.secret), body)))
	if err := json.Unmarshal(body, &d.ev); err != nil || r.Header.Get("Content-Type") != "application/json" {
		h.t.Errorf("webhook body %q (%s): %v", body, r.Header.Get("Content-Type"), err)
	}
	h.mu.Lock()
	h.all = append(h.all, d)
	fail := d.attempt <= h.failFirst
	if !fail {
		h.ok = append(h.ok, d)
	}
	h.mu.Unlock()
	if fail {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	h.got <- struct{}{}
}

// wait waits until n events were delivered and returns them.
func (h *hookReceiver) wait(n int) []delivery {
	h.t.Helper()
	timeout := time.After(20 * time.Second)
	for range n {
		select {
		case <-h.got:
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			h.t.Fatalf("%d events delivered after 20 s, want %d: %+v", len(h.ok), n, h.ok)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.ok...)
}

// TestWebhooks: every event reaches the webhook once, in order, signed, with retries through a
// receiver that fails the first two attempts of each: a stream's creation, an upload of three
// fragments (fragment.persisted opted in), an upload that ends with an ERROR, the deletion.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	const secret = "s3cret"
	hook := newHookReceiver(t, secret, 2)
	e := newMediaEnv(t, "fs", func(c *Config) {
		c.Webhooks, c.WebhookSecret, c.WebhookPersisted, c.WebhookBackoff = []string{hook.ts.URL + "/hook"}, secret, true, 5*time.Millisecond
	})
	arn := e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	nums := e.ingestAt(t, "cam", c, 0, 3, baseMillis, true)
	bad := e.startPut(t, "cam")
	bad.write(c.cluster(t, 0, baseMillis))
	bad.expectError(4006)
	e.deleteStream(t, arn)

	want := []string{EventStreamCreated, EventUploadStarted, EventFragmentPersisted, EventFragmentPersisted,
		EventFragmentPersisted, EventUploadEnded, EventUploadStarted, EventUploadError, EventUploadEnded, EventStreamDeleted}
	got := hook.wait(len(want))
	for i, d := range got {
		if d.typ != want[i] || d.ev.Type != want[i] || d.ev.Stream != "cam" {
			t.Errorf("delivery %d: %s (%+v), want %s of cam", i, d.typ, d.ev, want[i])
		}
		if d.id != int(d.ev.ID) || (i > 0 && d.id <= got[i-1].id) {
			t.Errorf("delivery %d: event id %d (header %d) after %d: out of order", i, d.ev.ID, d.id, got[i-1].id)
		}
		if d.attempt != 3 || !d.signed {
			t.Errorf("delivery %d: attempt %d, signature valid %v; want attempt 3 (after two 503s), signed", i, d.attempt, d.signed)
		}
	}
	for i, n := range nums {
		if f := got[2+i].ev; f.FragmentNumber != formatFragmentNumber(n) || f.Size == 0 || f.ServerTime == nil || f.FragmentTimecode == nil {
			t.Errorf("fragment.persisted %d: %+v, want fragment %d with its size, times and timecode", i, f, n)
		}
	}
	if end := got[5].ev; end.Fragments != 3 || end.Bytes == 0 || end.ErrorID != 0 {
		t.Errorf("upload.ended %+v, want 3 fragments, bytes, no error", end)
	}
	if ev := got[7].ev; ev.ErrorID != 4006 || ev.ErrorCode != "INVALID_MKV_DATA" || ev.Reason == "" {
		t.Errorf("upload.error %+v, want 4006 INVALID_MKV_DATA with its reason", ev)
	}
	if end := got[8].ev; end.ErrorID != 4006 || end.Fragments != 0 {
		t.Errorf("upload.ended after the ERROR: %+v, want error 4006, no fragment", end)
	}
	// The worker counts a delivery once the 200 is back, just after the receiver saw it.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fams = scrape(t, e.ts.URL+"/metrics")
		if v, _ := sample(fams, "kvs_webhook_attempts_total", "result", "ok"); v >= float64(len(want)) || time.Now().After(deadline) {
			break
		}
	}
	if v := value(t, fams, "kvs_webhook_attempts_total", "result", "retry"); v != float64(2*len(want)) {
		t.Errorf("kvs_webhook_attempts_total{result=retry} = %v, want %d", v, 2*len(want))
	}
	if v := value(t, fams, "kvs_webhook_attempts_total", "result", "ok"); v != float64(len(want)) {
		t.Errorf("kvs_webhook_attempts_total{result=ok} = %v, want %d", v, len(want))
	}
}

// TestWebhookDeadDoesNotSlowIngest: with a webhook that accepts connections and never answers
// (every POST would wait out its 10 s timeout) and a queue of 4, fragment.persisted events on:
// 30 fragments get their PERSISTED acks while the webhook's first POST still hangs, no delivery
// attempt having ended (ingest that waited for a delivery would wait out that timeout first), and
// the events that do not fit are dropped and counted.
func TestWebhookDeadDoesNotSlowIngest(t *testing.T) {
	t.Parallel()
	hook := newHookReceiver(t, "", 0)
	hook.hang = make(chan struct{})
	defer close(hook.hang)
	e := newMediaEnv(t, "fs", func(c *Config) {
		c.Webhooks, c.WebhookPersisted, c.WebhookQueue = []string{hook.ts.URL}, true, 4
	})
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	const n = 30
	for i := range n {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	fams := scrape(t, e.ts.URL+"/metrics")
	for _, result := range []string{"ok", "retry", "failed"} {
		if v, _ := sample(fams, "kvs_webhook_attempts_total", "result", result); v != 0 {
			t.Errorf("kvs_webhook_attempts_total{result=%s} = %v once every fragment was PERSISTED, want 0: ingest waited for a delivery attempt to end", result, v)
		}
	}
	// Published: stream.created, upload.started, 30 × fragment.persisted, upload.ended. At most
	// one is in the POST that hangs and 4 in the queue.
	if v := value(t, fams, "kvs_events_dropped_total", "sink", "webhook"); v < n+3-5 {
		t.Errorf("kvs_events_dropped_total{sink=webhook} = %v, want at least %d", v, n+3-5)
	}
}

// sseReader reads GET /events messages.
type sseReader struct {
	t    *testing.T
	body io.ReadCloser
	sc   *bufio.Scanner
}

func openEvents(t *testing.T, url string) *sseReader {
	t.Helper()
	resp := httpOpen(t, url)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s, Content-Type %q", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseReader{t: t, body: resp.Body, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event; ok is false at the end of the stream.
func (r *sseReader) next() (ev Event, ok bool) {
	r.t.Helper()
	var id string
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
				r.t.Fatalf("event data %q: %v", line, err)
			}
			if strconv.FormatUint(ev.ID, 10) != id {
				r.t.Fatalf("event %+v under id %q", ev, id)
			}
			return ev, true
		}
	}
	return ev, false
}

// TestEventsSSE: GET /events streams the events as they happen, filtered by ?stream= and with
// fragment.persisted only under ?fragments=1; a subscriber too slow to keep up is disconnected;
// Server.Close ends the stream.
func TestEventsSSE(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	all := openEvents(t, e.ts.URL+"/events")
	cam := openEvents(t, e.ts.URL+"/events?stream=cam&fragments=1")
	e.createStream(t, "other", 24)
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	e.ingestAt(t, "cam", c, 0, 2, baseMillis, true)

	for _, want := range []string{EventStreamCreated + " other", EventStreamCreated + " cam", EventUploadStarted + " cam", EventUploadEnded + " cam"} {
		ev, ok := all.next()
		if !ok || ev.Type+" "+ev.Stream != want {
			t.Fatalf("all events: %+v, want %s", ev, want)
		}
	}
	for _, want := range []string{EventStreamCreated, EventUploadStarted, EventFragmentPersisted, EventFragmentPersisted, EventUploadEnded} {
		ev, ok := cam.next()
		if !ok || ev.Type != want || ev.Stream != "cam" {
			t.Fatalf("cam's events: %+v, want %s", ev, want)
		}
	}
	// A subscriber that does not read: past its queue (and the socket's buffers) it is dropped.
	sub := &eventSub{ch: make(chan []byte, 4)}
	e.srv.events.subscribe(sub)
	for range 5 {
		e.srv.events.publish(&Event{Type: EventStreamCreated, Stream: "x"})
	}
	if _, open := <-sub.ch; !open {
		t.Fatal("the subscriber's first events are gone")
	}
	for range sub.ch { // closed once the fifth did not fit
	}
	if v := value(t, scrape(t, e.ts.URL+"/metrics"), "kvs_events_dropped_total", "sink", "sse"); v != 1 {
		t.Errorf("kvs_events_dropped_total{sink=sse} = %v, want 1", v)
	}
	e.srv.Close()
	for {
		if _, ok := all.next(); !ok {
			break // ended by Close
		}
	}
}
