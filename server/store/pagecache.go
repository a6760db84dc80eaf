package store

import (
	"os"
	"sync"

	"github.com/openkvs/kvs/internal/fsync"
)

// defaultWrittenCacheBytes is FSOptions.WrittenCacheBytes when it is 0.
const defaultWrittenCacheBytes = 1 << 30

// writtenCache bounds the page cache the store's own appends leave behind: once a record is on
// disk (its segment's fdatasync done), its pages are counted here, newest last, and when more
// than budget bytes are counted the oldest are dropped from the page cache (POSIX_FADV_DONTNEED;
// they stay on disk and readable). Left alone, the page cache grows by every byte ingested until
// memory is full. On the VM this project is measured on, memory the kernel has not touched for a
// while belongs to the host, and the first touch of each such page costs a fault there: appends
// to new files past their first GB cost 2.4-2.5 s of CPU per GB kept, 0.27-0.28 dropped
// (BenchmarkPageCacheGrowth in internal/piecewrite), and 1000 streams × 2 Mbit/s, 250 MB/s of
// new pages, had PERSISTED p99 of 0.6-1.8 s instead of 24-29 ms with the drop (README,
// Performance II). Dropped pages are reused by the next appends instead. Readers of the newest
// budget bytes (catching up, the archive APIs on recent media) still find them in memory; older
// media comes from disk, as it would once memory filled. The drops happen after the acks of the
// batch that synced the pages (syncLoop): no PERSISTED waits for them.
type writtenCache struct {
	budget  int64 // < 0: nothing is dropped
	mu      sync.Mutex
	ranges  []writtenRange // oldest first
	total   int64
	dropped int64 // bytes handed to the kernel to drop, in all
}

// writtenRange is a synced byte range of a segment file, still counted as cached.
type writtenRange struct {
	path     string
	off, end int64
}

// synced counts g's bytes up to end as on disk, and drops the oldest counted ranges past the
// budget. Called after each successful fdatasync of g, from any goroutine.
func (c *writtenCache) synced(g *segment, end int64) {
	if c.budget < 0 {
		return
	}
	c.mu.Lock()
	if end > g.cachedEnd {
		c.ranges = append(c.ranges, writtenRange{g.path, g.cachedEnd, end})
		c.total += end - g.cachedEnd
		g.cachedEnd = end
	}
	var drop []writtenRange
	for c.total > c.budget && len(c.ranges) > 0 {
		r := c.ranges[0]
		c.ranges = c.ranges[1:]
		c.total -= r.end - r.off
		c.dropped += r.end - r.off
		drop = append(drop, r)
	}
	c.mu.Unlock()
	page := int64(os.Getpagesize())
	for _, r := range drop {
		// The kernel drops only the pages wholly in the range. The page where it starts holds
		// the end of the segment's range before, synced and counted before it, so it starts at
		// that page: else each range left a page behind, one per fdatasync, never dropped.
		// A segment deleted meanwhile (retention, a deleted stream) has no pages left to drop;
		// any other failure only leaves the pages to the kernel.
		off := r.off &^ (page - 1)
		_ = fsync.Drop(r.path, off, r.end-off)
	}
}

// forget stops counting the ranges of the segment files gone tells, removed (retention, a byte
// cap, a deleted stream): the kernel freed their pages with the files, and counted, they made the
// drops reach live media early and kept an entry each, for good while under the budget
// (TestFSWrittenCacheForgetsRemoved).
func (c *writtenCache) forget(gone func(path string) bool) {
	if c.budget < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.ranges[:0]
	for _, r := range c.ranges {
		if gone(r.path) {
			c.total -= r.end - r.off
			continue
		}
		kept = append(kept, r)
	}
	clear(c.ranges[len(kept):]) // the paths of the forgotten ranges are not held
	c.ranges = kept
}
