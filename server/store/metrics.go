package store

import (
	"github.com/prometheus/client_golang/prometheus"
)

// fsMetrics are the FS store's Prometheus collectors (FSOptions.Metrics). They are made (and
// counted into) whether or not a registry takes them. The bytes and fragments the store holds
// are not here: the server reports those for every backend, from Store.Stats.
type fsMetrics struct {
	fdatasync        prometheus.Histogram
	commit           prometheus.Histogram
	deletedFragments *prometheus.CounterVec
	deletedBytes     *prometheus.CounterVec
}

// DiskLatencyBuckets are the histogram buckets (seconds) of disk and commit latencies: 100 µs to
// about 10 s.
var DiskLatencyBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 13)

func newFSMetrics(reg prometheus.Registerer, quota *diskQuota) (*fsMetrics, error) {
	m := &fsMetrics{
		fdatasync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvs_store_fsync_seconds",
			Help:    "FS store: time of one fdatasync of a segment file (the segments a group commit touched are synced in parallel).",
			Buckets: DiskLatencyBuckets,
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvs_store_commit_seconds",
			Help:    "FS store: time of one index commit (a bbolt transaction, fsynced) that makes a group of appends durable.",
			Buckets: DiskLatencyBuckets,
		}),
		deletedFragments: NewDeletedFragments(),
		deletedBytes:     NewDeletedBytes(),
	}
	for _, r := range []string{reasonRetention, reasonDiskQuota, reasonStreamCap} {
		m.deletedFragments.WithLabelValues(r)
		m.deletedBytes.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.fdatasync, m.commit, m.deletedFragments, m.deletedBytes}
	if quota.on() {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvs_store_disk_limit_bytes",
			Help: "FS store: the disk quota in bytes (--max-disk-usage; a percentage as of the filesystem's size at start).",
		}, func() float64 { return float64(quota.limit()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// deleted counts a deletion of fragments taking bytes, for reason.
func (m *fsMetrics) deleted(reason string, fragments int, bytes int64) {
	m.deletedFragments.WithLabelValues(reason).Add(float64(fragments))
	m.deletedBytes.WithLabelValues(reason).Add(float64(bytes))
}

// NewDeletedFragments makes the counter of fragments a store deleted, by reason (retention,
// disk_quota, stream_cap): one definition for every backend that registers it.
func NewDeletedFragments() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvs_store_deleted_fragments_total",
		Help: "Fragments the store deleted, by reason: retention, disk_quota (--max-disk-usage), stream_cap (the kvs:max-bytes tag).",
	}, []string{"reason"})
}

// NewDeletedBytes is NewDeletedFragments for the bytes deleted (FS: segment file bytes; a
// cluster: fragment payload bytes).
func NewDeletedBytes() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvs_store_deleted_bytes_total",
		Help: "Bytes the store deleted, by reason (as kvs_store_deleted_fragments_total).",
	}, []string{"reason"})
}
