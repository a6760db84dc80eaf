package server

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/openkvs/kvs/server/cluster"
)

// TestClusterMetrics: two nodes, each with one registry for its server and its cluster store (as
// kvs server has). Node 1 writes the stream, node 2 relays a second producer to it and follows
// the stream live for a reader of its own: the lease, batch and object counters move on node 1,
// the relay on node 2, and the internal tail on both; the ingest counts where the fragments are
// stored. Every kvs_cluster_* metric the Grafana dashboard queries is served.
func TestClusterMetrics(t *testing.T) {
	t.Parallel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	i, j := 0, 0
	nodes := newCluster(t, 2, func(c *cluster.Config) { c.Metrics = regs[i]; i++ }, func(c *Config) { c.Registry = regs[j]; j++ })
	n1, n2 := nodes[0], nodes[1]
	pc, c, got := writerAndReader(t, n1, n2)
	// Node 2's feeder finds the writer within a second and opens its tail.
	var f1, f2 map[string]*dto.MetricFamily
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		f2 = scrape(t, n2.ts.URL+"/metrics")
		if v, _ := sample(f2, "kvs_cluster_tails_opened_total"); v > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 2 opened no internal tail to the writer within 15 s")
		}
	}
	pc.fragment(c.cluster(t, 1, baseMillis), c.fragTimecode(1, baseMillis), true)
	pc2 := n2.startPut(t, "cam") // relayed to node 1
	pc2.write(c.header())
	pc2.fragment(c.cluster(t, 2, baseMillis), c.fragTimecode(2, baseMillis), true)
	pc2.end()
	pc.end()
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("node 2's live reader got nothing within 30 s")
	}
	f1, f2 = scrape(t, n1.ts.URL+"/metrics"), scrape(t, n2.ts.URL+"/metrics")
	atLeast := func(fams map[string]*dto.MetricFamily, node, name string, min float64, labels ...string) {
		t.Helper()
		if v := value(t, fams, name, labels...); v < min {
			t.Errorf("%s: %s%v = %v, want at least %v", node, name, labels, v, min)
		}
	}
	atLeast(f1, "node 1", "kvs_cluster_leases_taken_total", 1)
	atLeast(f1, "node 1", "kvs_cluster_batch_put_seconds", 1)
	atLeast(f1, "node 1", "kvs_cluster_batch_commit_seconds", 1)
	atLeast(f1, "node 1", "kvs_cluster_objects_written_total", 1)
	atLeast(f1, "node 1", "kvs_cluster_object_bytes_written_total", 1)
	atLeast(f1, "node 1", "kvs_cluster_tails_served_total", 1)
	atLeast(f1, "node 1", "kvs_ingest_fragments_total", 3, "stream", "cam")
	if v := value(t, f2, "kvs_cluster_relayed_uploads_total"); v != 1 {
		t.Errorf("node 2: kvs_cluster_relayed_uploads_total = %v, want 1", v)
	}
	if _, ok := sample(f2, "kvs_ingest_fragments_total", "stream", "cam"); ok {
		t.Error("node 2 counts ingest for the uploads it relayed")
	}
	for _, n := range dashboardMetrics(t) {
		if strings.HasPrefix(n, "kvs_cluster_") && f1[n] == nil && f2[n] == nil {
			t.Errorf("the dashboard queries %s, which no node serves", n)
		}
	}
	// Deleted fragments by reason: the cleanup's counters are served before any deletion.
	if _, ok := sample(f1, "kvs_store_deleted_fragments_total", "reason", "stream_cap"); !ok {
		t.Error("node 1 serves no kvs_store_deleted_fragments_total{reason=stream_cap}")
	}
}
