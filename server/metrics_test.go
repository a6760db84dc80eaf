package server

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openkvs/kvs/server/store"
)

// scrape GETs url (a /metrics endpoint) and parses the Prometheus text format.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // test
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET %s: Content-Type %q, want the text format", url, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

// sample returns the value of the series of family name whose labels include labels (name,
// value pairs): a counter's or gauge's value, a histogram's count. found is false when there is
// no such series.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, found bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// value is sample for a series that must be there (0 for a series that does not exist yet is
// the caller's choice: use sample).
func value(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := sample(fams, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	return v
}

// TestMetricsPutMedia scrapes /metrics around real uploads and reads: the ingest counters move by
// exactly the body bytes and fragments sent, PERSISTED acks and live deliveries are timed, an
// ERROR ack is counted by its code, GetMedia's bytes out are the bytes the client read, the
// gauges come back to 0, the store's sizes show, streams past MetricsMaxStreams share
// stream="(other)", and a deleted stream's series go.
func TestMetricsPutMedia(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs", func(c *Config) { c.MetricsMaxStreams = 1 })
	arn := e.createStream(t, "cam", 24)
	e.createStream(t, "cam2", 24)
	url := e.ts.URL + "/metrics"
	c := loadClip(t, "h264.mkv")
	before := scrape(t, url)
	for _, name := range []string{"process_cpu_seconds_total", "go_goroutines", "kvs_store_bytes", "kvs_store_fragments"} {
		if _, ok := sample(before, name); !ok {
			t.Errorf("no %s in the scrape", name)
		}
	}

	const frags = 5
	pc := e.startPut(t, "cam")
	body := c.header()
	pc.write(body)
	for i := range frags {
		cl := c.cluster(t, i, baseMillis)
		body = append(body, cl...)
		pc.fragment(cl, c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	// A second stream, past MetricsMaxStreams: its counters are the shared ones.
	pc2 := e.startPut(t, "cam2")
	live := e.getMedia(t, t.Context(), "cam2", map[string]any{"StartSelectorType": "NOW"}, true)
	defer live.Close()
	pc2.write(c.header())
	pc2.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	pc2.end()
	if _, err := io.ReadFull(live, make([]byte, 1)); err != nil { // the live chunk is on its way
		t.Fatal(err)
	}
	// An upload that breaks the rules: a cluster before the EBML header is ERROR 4006.
	bad := e.startPut(t, "cam2")
	bad.write(c.cluster(t, frags, baseMillis))
	bad.expectError(4006)

	// GetMedia of everything "cam" has: its bytes out are what the client reads.
	rd := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, false)
	got, err := io.ReadAll(rd)
	rd.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The live delivery is timed once its write returned, just after the client saw its bytes.
	var after map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		after = scrape(t, url)
		if n, _ := sample(after, "kvs_live_delivery_seconds"); n > 0 || time.Now().After(deadline) {
			break
		}
	}

	delta := func(name string, labels ...string) float64 {
		b, _ := sample(before, name, labels...)
		return value(t, after, name, labels...) - b
	}
	if d := delta("kvs_ingest_bytes_total", "stream", "cam"); d != float64(len(body)) {
		t.Errorf("kvs_ingest_bytes_total{stream=cam} moved by %v, want the %d body bytes sent", d, len(body))
	}
	if d := delta("kvs_ingest_fragments_total", "stream", "cam"); d != frags {
		t.Errorf("kvs_ingest_fragments_total{stream=cam} moved by %v, want %d", d, frags)
	}
	if d := delta("kvs_ingest_fragments_total", "stream", otherStreams); d != 1 {
		t.Errorf("kvs_ingest_fragments_total{stream=(other)} moved by %v, want 1 (cam2, past MetricsMaxStreams=1)", d)
	}
	if _, ok := sample(after, "kvs_ingest_bytes_total", "stream", "cam2"); ok {
		t.Error("cam2 has its own series past MetricsMaxStreams=1")
	}
	if d := delta("kvs_persisted_ack_seconds"); d != frags+1 {
		t.Errorf("kvs_persisted_ack_seconds counts %v acks, want %d", d, frags+1)
	}
	if d := delta("kvs_error_acks_total", "code", "4006"); d != 1 {
		t.Errorf("kvs_error_acks_total{code=4006} moved by %v, want 1", d)
	}
	if d := delta("kvs_egress_bytes_total", "api", "GetMedia"); d < float64(len(got)) {
		t.Errorf("kvs_egress_bytes_total{api=GetMedia} moved by %v, want at least the %d bytes read (and the live reader's)", d, len(got))
	}
	if d := delta("kvs_live_delivery_seconds"); d != 1 {
		t.Errorf("kvs_live_delivery_seconds counts %v deliveries, want 1", d)
	}
	if v := value(t, after, "kvs_active_uploads"); v != 0 {
		t.Errorf("kvs_active_uploads = %v after every upload ended", v)
	}
	if v := value(t, after, "kvs_active_readers"); v != 1 {
		t.Errorf("kvs_active_readers = %v with one live reader", v)
	}
	if v := value(t, after, "kvs_store_fragments"); v != frags+1 {
		t.Errorf("kvs_store_fragments = %v, want %d", v, frags+1)
	}
	if v := value(t, after, "kvs_store_bytes"); v < float64(len(body)) {
		t.Errorf("kvs_store_bytes = %v, less than the %d bytes stored", v, len(body))
	}
	if d := delta("kvs_events_total", "type", EventUploadStarted); d != 3 {
		t.Errorf("kvs_events_total{type=upload.started} moved by %v, want 3", d)
	}

	e.deleteStream(t, arn)
	if _, ok := sample(scrape(t, url), "kvs_ingest_bytes_total", "stream", "cam"); ok {
		t.Error("the deleted stream's series are still there")
	}
}

// dashboardMetrics returns the metric families the Grafana dashboard in docs/ queries.
func dashboardMetrics(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/grafana-kvs.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana-kvs.json: %v", err)
	}
	seen := map[string]bool{}
	name := regexp.MustCompile(`\b(?:kvs|process|go)_[a-z0-9_]+\b`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if base, ok := strings.CutSuffix(m, suffix); ok && strings.HasSuffix(base, "_seconds") {
						m = base
					}
				}
				seen[m] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// TestGrafanaDashboard: every metric the dashboard in docs/ queries is served by a single node
// with an FS store under a disk quota (after an upload and an ERROR), except the cluster's, which
// TestClusterMetrics checks on a cluster.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{MaxDiskBytes: 1 << 30, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := newMediaEnvStore(t, st, func(c *Config) { c.Registry = reg })
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	e.ingestAt(t, "cam", c, 0, 2, baseMillis, true)
	bad := e.startPut(t, "cam")
	bad.write(c.cluster(t, 0, baseMillis))
	bad.expectError(4006)
	fams := scrape(t, e.ts.URL+"/metrics")
	names := dashboardMetrics(t)
	if len(names) < 30 {
		t.Fatalf("the dashboard queries %d metrics: %v", len(names), names)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "kvs_cluster_") && fams[n] == nil {
			t.Errorf("the dashboard queries %s, which /metrics does not serve", n)
		}
	}
}

// statsStore counts Stats calls, each taking delay.
type statsStore struct {
	store.Store
	delay time.Duration
	calls atomic.Int32
}

func (s *statsStore) Stats(ctx context.Context) (store.Stats, error) {
	s.calls.Add(1)
	time.Sleep(s.delay)
	return s.Store.Stats(ctx)
}

// The kvs_store_* collector asks a store that answers fast at every scrape, and caches a slow
// one's answer (100 times its duration, at most storeStatsEvery).
func TestStoreCollectorCaching(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		delay time.Duration
		calls int32
	}{{0, 3}, {storeStatsSlow + 10*time.Millisecond, 1}} {
		st := &statsStore{Store: store.NewMem(), delay: tc.delay}
		srv, err := New(Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		c := newStoreCollector(srv)
		for range 3 {
			ch := make(chan prometheus.Metric, 3)
			c.Collect(ch)
			if len(ch) != 3 {
				t.Fatalf("delay %v: %d metrics, want 3", tc.delay, len(ch))
			}
		}
		if got := st.calls.Load(); got != tc.calls {
			t.Errorf("Stats taking %v: asked %d times in 3 scrapes, want %d", tc.delay, got, tc.calls)
		}
		srv.Close()
	}
}
