package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/openkvs/kvs/server/store"
)

// metrics are a node's cluster collectors (Config.Metrics): leases, batch objects and the
// cleanup's deletions. They count whether or not a registry takes them.
type metrics struct {
	leasesTaken      prometheus.Counter
	leasesLost       prometheus.Counter
	batchPut         prometheus.Histogram
	batchCommit      prometheus.Histogram
	objectsWritten   prometheus.Counter
	objectBytes      prometheus.Counter
	objectsDeleted   prometheus.Counter
	deletedFragments *prometheus.CounterVec
	deletedBytes     *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		leasesTaken: prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_leases_taken_total",
			Help: "Stream write leases this node took (a stream it did not write before, or took back)."}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_leases_lost_total",
			Help: "Stream write leases this node lost: another node took the stream (a renewal or a commit found another epoch)."}),
		batchPut: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kvs_cluster_batch_put_seconds",
			Help: "Time to PUT one batch object to the object store, retries included.", Buckets: store.DiskLatencyBuckets}),
		batchCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kvs_cluster_batch_commit_seconds",
			Help: "Time of the PostgreSQL transaction that indexes one batch's fragments, retries included.", Buckets: store.DiskLatencyBuckets}),
		objectsWritten: prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_objects_written_total",
			Help: "Batch objects this node wrote to the object store."}),
		objectBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_object_bytes_written_total",
			Help: "Bytes of the batch objects this node wrote."}),
		objectsDeleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "kvs_cluster_objects_deleted_total",
			Help: "Objects this node's cleanup deleted (no fragment refers to them any more, or they were never committed)."}),
		deletedFragments: store.NewDeletedFragments(),
		deletedBytes:     store.NewDeletedBytes(),
	}
	for _, r := range []string{"retention", "stream_cap"} {
		m.deletedFragments.WithLabelValues(r)
		m.deletedBytes.WithLabelValues(r)
	}
	return m
}

// register adds m and a gauge of the leases s holds to reg (nil: nothing).
func (m *metrics) register(reg prometheus.Registerer, s *Store) error {
	if reg == nil {
		return nil
	}
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvs_cluster_leases_held",
		Help: "Stream write leases this node holds now (the streams it writes)."}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.leases))
	})
	for _, c := range []prometheus.Collector{m.leasesTaken, m.leasesLost, m.batchPut, m.batchCommit, m.objectsWritten,
		m.objectBytes, m.objectsDeleted, m.deletedFragments, m.deletedBytes, held} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
