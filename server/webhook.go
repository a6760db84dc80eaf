package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// Webhooks (Config.Webhooks, kvs server --webhook): each URL gets every event (events.go) as a
// POST of its JSON, one at a time and in order, from a queue of Config.WebhookQueue events of its
// own, by one goroutine the hub owns. Headers:
//
//	Content-Type: application/json
//	X-Kvs-Event: <type>          X-Kvs-Event-Id: <id>          X-Kvs-Delivery-Attempt: <n>
//	X-Kvs-Signature: sha256=<hex HMAC-SHA256 of the body with Config.WebhookSecret>  (with a secret)
//
// A 2xx answer delivers it. A connection error, a timeout (10 s), 408, 429 or a 5xx is tried
// again after WebhookBackoff, doubling up to 30 s, webhookAttempts times in all; the events
// behind it wait (order is kept), and those that no longer fit the queue are dropped and counted.
// Any other answer (a 3xx or 4xx: the receiver refuses it) gives the event up at once. Failures
// are logged at most once a minute per webhook, with how many there were.

// Webhook delivery settings; see above.
const (
	webhookAttempts       = 6
	webhookTimeout        = 10 * time.Second
	webhookMaxBackoff     = 30 * time.Second
	DefaultWebhookBackoff = time.Second
	// webhookDrain is how long Server.Close lets the webhooks deliver what is queued (once each).
	webhookDrain = 2 * time.Second
)

type webhookItem struct {
	id   uint64
	typ  string
	body []byte
}

type webhook struct {
	h         *eventHub
	url       string
	fragments bool // gets fragment.persisted (Config.WebhookPersisted)
	queue     chan webhookItem
	client    *http.Client

	dropped    atomic.Int64 // dropped since the last log line
	failed     atomic.Int64 // given up since the last log line
	lastLogged atomic.Int64 // Unix seconds
}

func newWebhook(h *eventHub, raw string) (*webhook, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server: webhook %q: want an http:// or https:// URL", raw)
	}
	cfg := h.s.cfg
	return &webhook{h: h, url: raw, fragments: cfg.WebhookPersisted, queue: make(chan webhookItem, cfg.WebhookQueue),
		client: &http.Client{Timeout: webhookTimeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer to fix, not to follow with the body
		}}}, nil
}

// run delivers the queue until Server.Close, then what is left, once each, until the drain ends.
func (w *webhook) run() {
	h := w.h
	for {
		select {
		case it := <-w.queue:
			w.deliver(it)
		case <-h.closing:
			for {
				select {
				case it := <-w.queue:
					if h.ctx.Err() != nil || !w.attempt(it, 1).ok {
						w.giveUp(it)
						continue
					}
					h.s.metrics.webhookAttempts.WithLabelValues("ok").Inc()
				default:
					return
				}
			}
		}
	}
}

type attemptResult struct {
	ok, retry bool
	status    string // for the log
}

// deliver tries it until it is delivered, refused, out of attempts, or the server closes.
func (w *webhook) deliver(it webhookItem) {
	m := w.h.s.metrics.webhookAttempts
	wait := w.h.s.cfg.WebhookBackoff
	for n := 1; ; n++ {
		res := w.attempt(it, n)
		switch {
		case res.ok:
			m.WithLabelValues("ok").Inc()
			return
		case !res.retry || n == webhookAttempts:
			w.giveUp(it)
			w.logFailure(it, n, res.status)
			return
		}
		m.WithLabelValues("retry").Inc()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.h.closing:
			t.Stop()
			w.giveUp(it)
			return
		}
		wait = min(2*wait, webhookMaxBackoff)
	}
}

func (w *webhook) giveUp(webhookItem) {
	w.h.s.metrics.webhookAttempts.WithLabelValues("failed").Inc()
	w.h.s.metrics.eventsDropped.WithLabelValues("webhook").Inc()
	w.failed.Add(1)
}

// attempt POSTs it once.
func (w *webhook) attempt(it webhookItem, n int) attemptResult {
	req, err := http.NewRequestWithContext(w.h.ctx, http.MethodPost, w.url, bytes.NewReader(it.body))
	if err != nil {
		return attemptResult{status: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kvs-webhook")
	req.Header.Set("X-Kvs-Event", it.typ)
	req.Header.Set("X-Kvs-Event-Id", strconv.FormatUint(it.id, 10))
	req.Header.Set("X-Kvs-Delivery-Attempt", strconv.Itoa(n))
	if secret := w.h.s.cfg.WebhookSecret; secret != "" {
		req.Header.Set("X-Kvs-Signature", SignWebhook([]byte(secret), it.body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return attemptResult{retry: w.h.ctx.Err() == nil, status: err.Error()}
	}
	// Read (a little of) the answer so that the connection goes back to the pool: closed unread,
	// it is torn down, and every event would open a new one.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	c := resp.StatusCode
	return attemptResult{ok: c >= 200 && c < 300, retry: c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500,
		status: resp.Status}
}

// SignWebhook returns the X-Kvs-Signature of a webhook body: "sha256=" and the hex HMAC-SHA256
// of body with secret. A receiver computes it over the raw body it got and compares it with
// hmac.Equal.
func SignWebhook(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// noteDrop counts an event its full queue could not take, and logs now and then.
func (w *webhook) noteDrop() {
	w.dropped.Add(1)
	w.maybeLog("")
}

func (w *webhook) logFailure(it webhookItem, attempts int, status string) {
	w.maybeLog(fmt.Sprintf("event %d (%s) given up after %d attempts: %s", it.id, it.typ, attempts, status))
}

// maybeLog logs the webhook's trouble at most once a minute, with the counts since the last line.
func (w *webhook) maybeLog(last string) {
	now := time.Now().Unix()
	prev := w.lastLogged.Load()
	if now-prev < 60 || !w.lastLogged.CompareAndSwap(prev, now) {
		return
	}
	w.h.s.log.Warn("webhook: events not delivered: check that the receiver is up and answers 2xx within 10 s",
		"url", redactedURL(w.url), "dropped_queue_full", w.dropped.Swap(0), "given_up", w.failed.Swap(0), "last", last)
}

// redactedURL hides a password in u for logs.
func redactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return p.Redacted()
}
