package store

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FSOptions configures OpenFS. The zero value gives the defaults.
type FSOptions struct {
	// MaxSegmentBytes rolls a stream to a new segment file before a record would take the current
	// one past this size (a single larger record still gets a segment of its own). Default 64 MiB.
	MaxSegmentBytes int64
	// MaxSegmentAge rolls to a new segment when the current one was created this long ago, so
	// retention can drop data of slow streams in time. Default 1 h.
	MaxSegmentAge time.Duration
	// MaxDiskBytes caps what the store takes on disk, its segment files and index together: when
	// an append would take it past the cap, the oldest segments across all streams (by their
	// newest fragment's server time) are deleted first, whole, before retention would, and the
	// append goes on: ingest is never refused because of old data. Each deletion is logged and
	// counted (reason disk_quota). Segments are then at most a sixteenth of the cap (at least
	// 64 KiB), so what is deleted at a time stays small next to it. 0: no cap.
	MaxDiskBytes int64
	// MaxDiskPercent (0 < p <= 100) caps the use of the filesystem that holds the directory, as
	// df counts it (used over used plus available), counting every file on it, not only the
	// store's: the store deletes its oldest segments as with MaxDiskBytes when an append would
	// take the filesystem past it. 0: no cap. With both set, each applies.
	MaxDiskPercent float64
	// WrittenCacheBytes is how much of the newest media the store's appends leave in the page
	// cache: older written pages are dropped from it once on disk (writtenCache says why). 0:
	// 1 GiB; negative: none is dropped, the kernel alone decides.
	WrittenCacheBytes int64
	// Logger receives recovery reports and the deletions the caps make. Default: discard.
	Logger *slog.Logger
	// Metrics, when not nil, gets the store's collectors: fdatasync and index commit latency,
	// deletions by reason (metrics.go).
	Metrics prometheus.Registerer

	now func() time.Time // segment age clock; tests replace it

	removeAll func(string) error // removes a deleted stream's directory: os.RemoveAll (tests fail it)

	purgeBatch       int    // fragments one purge commit deletes at most: purgeBatchFragments, or less in tests
	afterPurgeCommit func() // called after each step of a purge (index commit, files removed), st.mu not held (tests)
}

const (
	defaultMaxSegmentBytes = 64 << 20
	defaultMaxSegmentAge   = time.Hour
	// numberBlock is how far ahead of the numbers handed out the persisted high-water mark runs:
	// one bbolt commit per numberBlock NextNumber calls; a restart skips the unused rest.
	numberBlock = 1000
	// maxBatch caps how many appends one batch takes.
	maxBatch = 1024
	// maxSyncing is how many batches may be fdatasyncing at once: more requests in flight let
	// the disk and the filesystem journal merge work (see BenchmarkDiskFdatasync/files=64).
	maxSyncing = 8
	// commitInterval is the least time between the starts of two index commits while
	// busyStreams or more streams append (counted over busyWindow): under many streams each
	// commit then takes the appends of several, where it took about one (500 streams × 1
	// fragment/s made 420 bbolt commits a second, each with two fdatasyncs). A PERSISTED waits
	// up to this much longer; one stream, or a few, never waits.
	commitInterval = 10 * time.Millisecond
	busyStreams    = 4
	busyWindow     = 100 * time.Millisecond
	// purgeBatchFragments bounds the index entries one purge transaction deletes (in whole
	// segments, at least one). bbolt has one writer at a time and keeps every page a transaction
	// touches in memory until it commits: a purge of a week of a 1 s stream (600,000 fragments)
	// in one transaction held every stream's index commits, so their PERSISTED acks, for 2.3 s
	// and took 200 MB (measured by hand on a generated 2.7 M-fragment directory, session 23's
	// note); a month's would take about four times that. In steps the group commit gets in
	// between (TestFSRetentionPurgeCommitsInSteps).
	purgeBatchFragments = 20_000
)
