package server

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/openkvs/kvs/server/store"
)

// The server's Prometheus metrics, served at GET /metrics (ops.go). Cardinality is bounded by
// design: the only per-stream series are two counters (ingest bytes and fragments), for at most
// Config.MetricsMaxStreams streams (default 100), the first ones seen since the start; the others
// share the series stream="(other)", a value no stream name can take. A deleted stream's series
// go and free its place. Latencies are histograms over all streams, errors are labelled by their
// code, egress by API: label sets that do not grow with the number of streams or requests. The
// instrumentation on the ingest path is a few atomic adds per body read and per fragment and one
// histogram observation per PERSISTED ack.

// DefaultMetricsMaxStreams is the default Config.MetricsMaxStreams.
const DefaultMetricsMaxStreams = 100

// otherStreams is the stream label of the streams past Config.MetricsMaxStreams.
const otherStreams = "(other)"

// Buckets (seconds): PERSISTED acks from 1 ms to 32 s, live delivery from 0.5 ms to 16 s.
var (
	persistedBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)
	deliveryBuckets  = prometheus.ExponentialBuckets(0.0005, 2, 16)
)

type metrics struct {
	reg *prometheus.Registry

	ingestBytes, ingestFragments *prometheus.CounterVec
	streams                      streamSeries

	persistedAck  prometheus.Histogram
	liveDelivery  prometheus.Histogram
	errorAcks     *prometheus.CounterVec
	activeUploads prometheus.Gauge
	activeReaders prometheus.Gauge
	egress        map[string]prometheus.Counter // by request path

	// cluster mode
	relayedUploads prometheus.Counter
	tailsServed    prometheus.Counter
	tailsOpened    prometheus.Counter

	// events.go, webhook.go
	events          *prometheus.CounterVec // published, by type
	eventsDropped   *prometheus.CounterVec // by sink
	webhookAttempts *prometheus.CounterVec // by result
	subscribers     prometheus.Gauge
}

// egressAPIs labels the bytes out of the media reads by API (label api of kvs_egress_bytes_total).
var egressAPIs = map[string]string{
	"/getMedia":                "GetMedia",
	"/getMediaForFragmentList": "GetMediaForFragmentList",
	"/getClip":                 "GetClip",
	"/getImages":               "GetImages",
	hlsPathPrefix + "getHLSMasterPlaylist.m3u8": "HLS",
	hlsPathPrefix + "getHLSMediaPlaylist.m3u8":  "HLS",
	hlsPathPrefix + "getMP4InitFragment.mp4":    "HLS",
	hlsPathPrefix + "getMP4MediaFragment.mp4":   "HLS",
	hlsPathPrefix + "getTSFragment.ts":          "HLS",
	dashPathPrefix + "getDASHManifest.mpd":      "DASH",
	dashPathPrefix + "getMP4InitFragment.mp4":   "DASH",
	dashPathPrefix + "getMP4MediaFragment.mp4":  "DASH",
	tailPath: "internal_tail",
}

// newMetrics makes the server's collectors and registers them, the Go and process collectors and
// the store's sizes in reg.
func newMetrics(s *Server, reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		reg: reg,
		ingestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_ingest_bytes_total",
			Help: "PutMedia request body bytes received, by stream (streams past --metrics-max-streams: stream=\"(other)\")."}, []string{"stream"}),
		ingestFragments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_ingest_fragments_total",
			Help: "Fragments received whole (acked RECEIVED) by PutMedia, by stream (as kvs_ingest_bytes_total)."}, []string{"stream"}),
		persistedAck: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kvs_persisted_ack_seconds",
			Help: "From a fragment's RECEIVED to its PERSISTED ack (durable in the store), all streams.", Buckets: persistedBuckets}),
		liveDelivery: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kvs_live_delivery_seconds",
			Help: "From a fragment's arrival in the live cache to its chunk written to a live GetMedia reader, all streams.", Buckets: deliveryBuckets}),
		errorAcks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_error_acks_total",
			Help: "PutMedia ERROR acks, by ErrorId (4000-5001, see the PutMedia reference)."}, []string{"code"}),
		activeUploads: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvs_active_uploads",
			Help: "PutMedia uploads this node is storing now (relayed ones are counted by the node that writes)."}),
		activeReaders: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvs_active_readers",
			Help: "GetMedia responses being served now (live and catching up)."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_events_total",
			Help: "Events published (GET /events, --webhook), by type."}, []string{"type"}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_events_dropped_total",
			Help: "Events not delivered, by sink: webhook (its queue was full, or it failed every attempt) or sse (a subscriber too slow, which is disconnected)."}, []string{"sink"}),
		webhookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_webhook_attempts_total",
			Help: "Webhook POSTs, by result: ok (2xx), retry (failed, tried again), failed (given up)."}, []string{"result"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvs_event_subscribers",
			Help: "GET /events (Server-Sent Events) subscribers connected now."}),
		egress: map[string]prometheus.Counter{},
	}
	egress := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kvs_egress_bytes_total",
		Help: "Response bytes of the media reads, by API: GetMedia, GetMediaForFragmentList, GetClip, GetImages, HLS, internal_tail (cluster)."}, []string{"api"})
	for path, api := range egressAPIs {
		m.egress[path] = egress.WithLabelValues(api)
	}
	m.streams = streamSeries{max: s.cfg.MetricsMaxStreams, m: map[string]*streamCounters{}, bytes: m.ingestBytes, fragments: m.ingestFragments}
	for _, r := range []string{"ok", "retry", "failed"} {
		m.webhookAttempts.WithLabelValues(r)
	}
	for _, sink := range []string{"webhook", "sse"} {
		m.eventsDropped.WithLabelValues(sink)
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ingestBytes, m.ingestFragments, m.persistedAck, m.liveDelivery, m.errorAcks, m.activeUploads, m.activeReaders,
		egress, m.events, m.eventsDropped, m.webhookAttempts, m.subscribers,
		newStoreCollector(s),
	}
	m.relayedUploads = prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_relayed_uploads_total",
		Help: "PutMedia uploads this node relayed to the node that writes their stream."})
	m.tailsServed = prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_tails_served_total",
		Help: "Internal tails this node served: other nodes following a stream it writes, for their live readers."})
	m.tailsOpened = prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_tails_opened_total",
		Help: "Internal tails this node opened to the writer of a stream its live readers follow."})
	if s.cfg.Cluster != nil { // a single node counts into them too, but has nothing to show
		cs = append(cs, m.relayedUploads, m.tailsServed, m.tailsOpened)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// errorAck counts one ERROR ack.
func (m *metrics) errorAck(id int) { m.errorAcks.WithLabelValues(strconv.Itoa(id)).Inc() }

// streamSeries hands out the per-stream ingest counters, at most max streams with their own.
type streamSeries struct {
	mu               sync.Mutex
	max              int
	m                map[string]*streamCounters
	other            *streamCounters
	bytes, fragments *prometheus.CounterVec
	pruned           time.Time // the last prune (get)
}

// streamCounters are one stream's ingest counters (or the shared "(other)" ones).
type streamCounters struct {
	bytes, fragments prometheus.Counter
	arn              string // the stream that last took them (a stream created again takes them over)
}

// seriesPruneEvery bounds how often get, with every place taken, asks the store which of the
// streams holding one still exist (on a cluster, a stream deleted through another node is never
// dropped here).
const seriesPruneEvery = 10 * time.Second

// get returns the counters of stream, giving it its own while fewer than max streams have them.
// With every place taken it first frees those of streams the store no longer has (listed by
// list, at most every seriesPruneEvery).
func (ss *streamSeries) get(stream, arn string, list func() ([]store.Stream, error)) *streamCounters {
	ss.mu.Lock()
	prune := ss.m[stream] == nil && len(ss.m) >= ss.max && ss.max > 0 && list != nil && time.Since(ss.pruned) >= seriesPruneEvery
	if prune {
		ss.pruned = time.Now()
	}
	ss.mu.Unlock()
	if prune {
		ss.prune(list)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c := ss.m[stream]; c != nil {
		c.arn = arn
		return c
	}
	if len(ss.m) >= ss.max {
		if ss.other == nil {
			ss.other = &streamCounters{bytes: ss.bytes.WithLabelValues(otherStreams), fragments: ss.fragments.WithLabelValues(otherStreams)}
		}
		return ss.other
	}
	c := &streamCounters{bytes: ss.bytes.WithLabelValues(stream), fragments: ss.fragments.WithLabelValues(stream), arn: arn}
	ss.m[stream] = c
	return c
}

// drop removes a deleted stream's series, freeing its place, unless a stream created again under
// its name has taken them over since.
func (ss *streamSeries) drop(stream, arn string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c, ok := ss.m[stream]; ok && c.arn == arn {
		ss.removeLocked(stream)
	}
}

// prune frees the places of the streams that list (the store's streams, asked without the lock)
// no longer has.
func (ss *streamSeries) prune(list func() ([]store.Stream, error)) {
	all, err := list()
	if err != nil {
		return
	}
	live := make(map[string]bool, len(all))
	for _, st := range all {
		live[st.Name] = true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for name := range ss.m {
		if !live[name] {
			ss.removeLocked(name)
		}
	}
}

// removeLocked removes a stream's series. ss.mu is held.
func (ss *streamSeries) removeLocked(stream string) {
	delete(ss.m, stream)
	ss.bytes.DeleteLabelValues(stream)
	ss.fragments.DeleteLabelValues(stream)
}

// storeCollector reports Store.Stats as kvs_store_streams, kvs_store_fragments and
// kvs_store_bytes. A store that answers fast (FS and memory keep counters; a small cluster's
// index) is asked at every scrape; one whose last answer took storeStatsSlow or more (a large
// cluster scans its index) again only after 100 times that, and at most every storeStatsEvery: a
// scrape may then see figures that old. (Caching every answer for 100 times its duration made a
// fast store's figures stale whenever one answer was slow to be scheduled on a loaded machine: a
// scrape right after an upload then missed it.)
type storeCollector struct {
	s                         *Server
	streams, fragments, bytes *prometheus.Desc

	mu    sync.Mutex
	at    time.Time     // the last ask
	every time.Duration // how long its answer serves
	last  store.Stats
	ok    bool
}

const (
	storeStatsEvery = 10 * time.Second
	storeStatsSlow  = 20 * time.Millisecond
)

func newStoreCollector(s *Server) *storeCollector {
	return &storeCollector{s: s,
		streams:   prometheus.NewDesc("kvs_store_streams", "Streams in the store.", nil, nil),
		fragments: prometheus.NewDesc("kvs_store_fragments", "Fragments in the store (a cluster: in the whole cluster), refreshed at most every 10 s.", nil, nil),
		bytes:     prometheus.NewDesc("kvs_store_bytes", "Bytes the stored fragments take: FS, segment files and index; a cluster, fragment payloads of the whole cluster; memory, payloads. Refreshed at most every 10 s.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.streams
	ch <- c.fragments
	ch <- c.bytes
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.at) >= c.every {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		st, err := c.s.store.Stats(ctx)
		cancel()
		c.at, c.ok = time.Now(), err == nil
		c.every = 0
		if took := c.at.Sub(start); took >= storeStatsSlow {
			c.every = min(100*took, storeStatsEvery)
		}
		if err == nil {
			c.last = st
		} else {
			c.s.log.Warn("metrics: store stats", "err", err)
		}
	}
	st, ok := c.last, c.ok
	c.mu.Unlock()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(st.Streams))
	ch <- prometheus.MustNewConstMetric(c.fragments, prometheus.GaugeValue, float64(st.Fragments))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
}
