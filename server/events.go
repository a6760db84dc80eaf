package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Events: what happens to streams and uploads, told to operators' tools as it happens, a kvs
// extension. One hub per server publishes each Event to every sink that wants it, in one order
// (their IDs): the webhooks (webhook.go, Config.Webhooks) and the subscribers of GET /events, a
// Server-Sent Events stream (the web console's live updates).
//
// Publishing never blocks: each sink has a bounded queue, and an event that does not fit is
// dropped and counted (kvs_events_dropped_total). A webhook that is slow or dead only loses its
// own events; an SSE subscriber that falls behind is disconnected (its EventSource reconnects and
// should list again what it shows). Ingest never waits for a sink.
//
// fragment.persisted is opt-in, as it comes once per fragment: webhooks get it with
// Config.WebhookPersisted, subscribers with ?fragments=1; with no sink asking for it, PutMedia
// does not even build it. On a cluster each node publishes what it handles: a node's sinks see
// the uploads it writes and the streams created and deleted through it (Event.Node names it).

// Event types.
const (
	EventStreamCreated     = "stream.created"     // CreateStream succeeded
	EventStreamDeleted     = "stream.deleted"     // DeleteStream succeeded
	EventUploadStarted     = "upload.started"     // a PutMedia upload got its 200 and is being stored here
	EventUploadEnded       = "upload.ended"       // it ended: Fragments PERSISTED, Bytes received, ErrorID if an ERROR ended it
	EventFragmentPersisted = "fragment.persisted" // a fragment got its PERSISTED ack (opt-in)
	EventUploadError       = "upload.error"       // an ERROR ack went out (ErrorID, ErrorCode, Reason)
)

var eventTypes = []string{EventStreamCreated, EventStreamDeleted, EventUploadStarted, EventUploadEnded,
	EventFragmentPersisted, EventUploadError}

// Event is one notification, as the JSON body of a webhook POST and the data of a GET /events
// message. Members that do not apply to its Type are left out.
type Event struct {
	ID     uint64    `json:"id"` // increasing in publishing order, per server process (from 1 at each start)
	Type   string    `json:"type"`
	Time   time.Time `json:"time"` // when it was published
	Stream string    `json:"stream"`
	Node   string    `json:"node,omitempty"` // a cluster node's advertised URL

	// fragment.persisted and upload.error (when the ERROR names a fragment)
	FragmentNumber   string     `json:"fragment_number,omitempty"`
	FragmentTimecode *int64     `json:"fragment_timecode,omitempty"` // the cluster timecode the producer sent
	ServerTime       *time.Time `json:"server_time,omitempty"`
	ProducerTime     *time.Time `json:"producer_time,omitempty"`
	DurationMillis   int64      `json:"duration_ms,omitempty"`
	Size             int64      `json:"size,omitempty"` // the stored fragment's bytes

	// upload.error, upload.ended (ErrorID only)
	ErrorID   int    `json:"error_id,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	Reason    string `json:"reason,omitempty"`

	// upload.started, upload.ended
	Remote    string `json:"remote,omitempty"`    // the producer's address (or the relaying node's)
	Fragments int    `json:"fragments,omitempty"` // upload.ended: fragments PERSISTED (RECEIVED for a stream that keeps no data)
	Bytes     int64  `json:"bytes,omitempty"`     // upload.ended: request body bytes received
}

// Sink queue sizes: what a sink may fall behind by before its events are dropped.
const (
	DefaultWebhookQueue = 1000
	sseQueue            = 256
	sseHeartbeat        = 15 * time.Second
)

// eventHub publishes events to the sinks. It is safe for concurrent use.
type eventHub struct {
	s         *Server
	node      string
	published map[string]prometheus.Counter // kvs_events_total by type
	hooks     []*webhook

	mu     sync.Mutex
	seq    uint64
	subs   map[*eventSub]struct{}
	closed bool

	fragmentSinks atomic.Int32    // sinks that want fragment.persisted
	subsDone      chan struct{}   // closed by endSubscribers: GET /events responses end
	closing       chan struct{}   // closed by close: the webhooks drain
	ctx           context.Context // webhook requests; cancelled when Close's drain ends
	cancel        context.CancelFunc
	wg            sync.WaitGroup // webhook workers
}

func newEventHub(s *Server) (*eventHub, error) {
	h := &eventHub{s: s, subs: map[*eventSub]struct{}{}, subsDone: make(chan struct{}), closing: make(chan struct{}),
		published: map[string]prometheus.Counter{}}
	if s.cfg.Cluster != nil {
		h.node = s.cfg.AdvertiseURL
	}
	for _, t := range eventTypes {
		h.published[t] = s.metrics.events.WithLabelValues(t)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for _, u := range s.cfg.Webhooks {
		w, err := newWebhook(h, u)
		if err != nil {
			h.cancel()
			return nil, err
		}
		h.hooks = append(h.hooks, w)
		if w.fragments {
			h.fragmentSinks.Add(1)
		}
	}
	for _, w := range h.hooks {
		h.wg.Go(w.run)
	}
	return h, nil
}

// wantFragments reports whether any sink wants fragment.persisted now (else PutMedia does not
// build it).
func (h *eventHub) wantFragments() bool { return h.fragmentSinks.Load() > 0 }

// publish numbers ev, stamps it and hands it to every sink that wants it, without blocking.
func (h *eventHub) publish(ev *Event) {
	if ev.Type == EventFragmentPersisted && !h.wantFragments() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.seq++
	ev.ID, ev.Time, ev.Node = h.seq, time.Now().UTC(), h.node
	body, err := json.Marshal(ev)
	if err != nil { // cannot happen: plain fields
		h.s.log.Error("events: encoding", "type", ev.Type, "err", err)
		return
	}
	h.published[ev.Type].Inc()
	var msg []byte
	for sub := range h.subs {
		if !sub.wants(ev) {
			continue
		}
		if msg == nil {
			msg = appendSSE(nil, ev.ID, body)
		}
		select {
		case sub.ch <- msg:
		default: // too slow: disconnected, so that it lists again what it missed
			h.dropLocked(sub)
			h.s.metrics.eventsDropped.WithLabelValues("sse").Inc()
		}
	}
	for _, w := range h.hooks {
		if ev.Type == EventFragmentPersisted && !w.fragments {
			continue
		}
		select {
		case w.queue <- webhookItem{id: ev.ID, typ: ev.Type, body: body}:
		default:
			h.s.metrics.eventsDropped.WithLabelValues("webhook").Inc()
			w.noteDrop()
		}
	}
}

// appendSSE appends one Server-Sent Events message: its id and its data, one JSON line.
func appendSSE(b []byte, id uint64, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// endSubscribers ends the GET /events responses (Server.Close, first: an HTTP server's shutdown
// waits for them).
func (h *eventHub) endSubscribers() {
	select {
	case <-h.subsDone:
	default:
		close(h.subsDone)
	}
}

// close stops publishing, lets the webhooks deliver what is queued for up to webhookDrain, then
// waits for them.
func (h *eventHub) close() {
	h.endSubscribers()
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	close(h.closing)
	t := time.AfterFunc(webhookDrain, h.cancel)
	h.wg.Wait()
	t.Stop()
	h.cancel()
}

// eventSub is one GET /events subscriber.
type eventSub struct {
	ch        chan []byte // SSE messages; closed when the hub drops it
	stream    string      // only this stream's events ("" = all)
	fragments bool        // wants fragment.persisted
	gone      bool        // dropped or unsubscribed (hub.mu)
}

func (sub *eventSub) wants(ev *Event) bool {
	return (sub.stream == "" || sub.stream == ev.Stream) && (ev.Type != EventFragmentPersisted || sub.fragments)
}

func (h *eventHub) subscribe(sub *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[sub] = struct{}{}
	if sub.fragments {
		h.fragmentSinks.Add(1)
	}
	h.s.metrics.subscribers.Inc()
}

// dropLocked removes sub and closes its channel; h.mu is held.
func (h *eventHub) dropLocked(sub *eventSub) {
	if sub.gone {
		return
	}
	sub.gone = true
	delete(h.subs, sub)
	close(sub.ch)
	if sub.fragments {
		h.fragmentSinks.Add(-1)
	}
	h.s.metrics.subscribers.Dec()
}

func (h *eventHub) unsubscribe(sub *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(sub)
}

// serve answers GET /events: a text/event-stream of the events as they are published, from the
// moment of the request (there is no history: a client that reconnects lists again what it
// shows). ?stream=NAME keeps one stream's events, ?fragments=1 adds fragment.persisted. Each
// message is "id: <id>" and "data: <Event as JSON>"; a comment line every 15 s keeps proxies
// from closing an idle stream. The response ends when the client leaves, when it falls more than
// 256 events behind (it is disconnected; EventSource reconnects after the retry delay of 2 s),
// or on Server.Close.
func (h *eventHub) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sub := &eventSub{ch: make(chan []byte, sseQueue), stream: q.Get("stream"), fragments: q.Get("fragments") == "1" || q.Get("fragments") == "true"}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	h.subscribe(sub)
	defer h.unsubscribe(sub)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(h.s.media.writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 2000\n: kvs events\n\n")) {
		return
	}
	ping := time.NewTicker(sseHeartbeat)
	defer ping.Stop()
	for {
		select {
		case msg, ok := <-sub.ch:
			if !ok || !write(msg) {
				return
			}
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case <-r.Context().Done():
			return
		case <-h.subsDone:
			return
		}
	}
}
