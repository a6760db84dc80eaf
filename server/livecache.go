package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/server/store"
)

// liveFragment is one complete fragment held in a stream's in-memory buffer: its metadata and the
// stored chunk bytes (EBML header, Segment, Info, Tracks, KVS Tags, Cluster). Chunk is immutable
// once published; readers share it without copying.
//
// Chunk's memory is recycled: it comes from internal/bufpool and goes back there, for a later
// fragment of any session, once nobody holds a reference (a fresh multi-megabyte buffer per
// fragment costs page faults and zeroing: with reuse, put-media of a 201 MB file took 0.81 s
// instead of 0.89 s in interleaved runs, and a 200-stream kvs bench peaked at 587 MB RSS instead
// of 733 MB).
// References: the session's (until the store has the bytes), the buffer's (until eviction) and
// each reader's. A reader takes its reference under the buffer's lock (acquire, acquireAfter) and
// releases it when done with Chunk; the other accessors (get, after, snapshot) are for Meta only.
type liveFragment struct {
	Meta      store.FragmentMeta
	Timecode  int64 // raw cluster timecode as sent by the producer (for acks and logs)
	Chunk     []byte
	Published time.Time
	// unsynced is set while the fragment is written to the store but not yet durable (indexed):
	// a reader that misses it in the buffer would not find it in the store either, so the buffer
	// keeps it (and everything after it) past its limits until then.
	unsynced atomic.Bool
	// failed is set when the store refused it or its backends did not answer: it was seen live
	// but is not archived, and the archived-media APIs do not list it.
	failed atomic.Bool

	refs atomic.Int32
	pool []byte // bufpool memory holding Chunk: the last release puts it back (nil: the GC takes Chunk)
}

// release drops a reference to Chunk; the last one hands the memory back to the buffer pool. It
// does nothing on a nil fragment.
func (f *liveFragment) release() {
	if f == nil || f.refs.Add(-1) != 0 || f.pool == nil {
		return
	}
	bufpool.Put(f.pool)
}

// bufferLimits bound one stream's in-memory buffer. Whichever limit is reached first evicts the
// oldest fragments; the newest fragment is kept over MaxBytes, and goes only once older than
// MaxAge (media's sweep evicts a buffer whose stream publishes nothing more).
type bufferLimits struct {
	MaxBytes int64
	MaxAge   time.Duration
	// Archived: the stream keeps its data in the store, which is what the archived-media APIs
	// list; the buffer only adds what the store does not have for a retention-0 stream.
	Archived bool
}

// Defaults: a stream that keeps data on disk needs only a short window in memory for live tailing
// (slower readers fall back to the store, which serves recent fragments from the page cache):
// 1.5 s or 4 MiB, so the newest two fragments of 1 s. The buffer is most of the server's memory:
// a 20 s kvs bench of 200 streams peaked at 824 MB RSS with 5 s, 1139 MB with 30 s / 16 MiB; at
// 500 streams the live heap was 758 MB with 5 s (the buffers 1.25 MB a stream at 2 Mbit/s); at
// 1000 streams peak RSS was 1.55 MB a stream with 2 s, 1.36-1.42 MB with 1.5 s. A retention-0
// stream has nothing else, so it gets the window KVS documents for its live buffer (about 5
// minutes, 200 MB).
var (
	archivedBufferLimits = bufferLimits{MaxBytes: 4 << 20, MaxAge: 1500 * time.Millisecond, Archived: true}
	liveOnlyBufferLimits = bufferLimits{MaxBytes: 200 << 20, MaxAge: 5 * time.Minute}
)

// streamBuffer is the chunk cache of one stream: its recent fragments' bytes, shared by the live
// readers, who learn of new ones from the notifier (notify.go) and pull them from here, or from
// the store once they are older than the buffer's oldest: a slow reader never stalls the
// producer and never loses data.
type streamBuffer struct {
	mu     sync.Mutex
	frags  []*liveFragment // ordered by Meta.Number
	bytes  int64
	limits bufferLimits
	last   uint64 // highest published number (0: none yet)
	gone   bool   // the stream was deleted
	arn    string // the stream's ("" when not known): one created again under the name has another

	seq sequencer // orders the appends of concurrent PutMedia sessions (sequencer.go)
}

func newStreamBuffer(l bufferLimits) *streamBuffer {
	return &streamBuffer{limits: l}
}

// setLimits changes the buffer's limits (for example after UpdateDataRetention).
func (b *streamBuffer) setLimits(l bufferLimits) {
	b.mu.Lock()
	b.limits = l
	b.evictLocked(time.Now())
	b.mu.Unlock()
}

// ensureLimits is setLimits when l differs from the buffer's limits.
func (b *streamBuffer) ensureLimits(l bufferLimits) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limits != l {
		b.limits = l
		b.evictLocked(time.Now())
	}
}

// publish adds f, whose number must be greater than every published one (else it is ignored
// and publish reports false). The caller then notifies the stream's readers.
func (b *streamBuffer) publish(f *liveFragment) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone || f.Meta.Number <= b.last {
		return false
	}
	f.refs.Add(1) // the buffer's
	b.frags = append(b.frags, f)
	b.bytes += int64(len(f.Chunk))
	b.last = f.Meta.Number
	b.evictLocked(f.Published)
	return true
}

func (b *streamBuffer) evictLocked(now time.Time) {
	drop := 0
	for drop < len(b.frags) {
		f := b.frags[drop]
		expired := now.Sub(f.Published) > b.limits.MaxAge
		if f.unsynced.Load() || !expired && (b.bytes <= b.limits.MaxBytes || drop == len(b.frags)-1) {
			break
		}
		b.bytes -= int64(len(f.Chunk))
		f.release()
		drop++
	}
	if drop > 0 {
		clear(b.frags[:drop])
		b.frags = b.frags[drop:]
	}
}

// evict drops what the limits no longer keep: after a fragment became durable (until then it
// stays, whatever the limits), an upload's last fragments would otherwise wait for the stream's
// next publish.
func (b *streamBuffer) evict() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.evictLocked(time.Now())
}

// markDurable marks every buffered fragment numbered upTo or lower durable (a cluster node
// learned that the writer committed them) and lets the buffer evict them again.
func (b *streamBuffer) markDurable(upTo uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.frags {
		if f.Meta.Number > upTo {
			break
		}
		f.unsynced.Store(false)
	}
	b.evictLocked(time.Now())
}

// oldestUnsynced returns when the oldest buffered fragment not known to be durable was published
// (zero: there is none).
func (b *streamBuffer) oldestUnsynced() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.frags {
		if f.unsynced.Load() {
			return f.Published
		}
	}
	return time.Time{}
}

// after returns the first buffered fragment with a number greater than n, and the number of the
// oldest buffered fragment (0 when the buffer is empty). For Meta only: see acquireAfter.
func (b *streamBuffer) after(n uint64) (f *liveFragment, oldest uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.afterLocked(n)
}

// acquireAfter is after with a reference to the fragment's Chunk, which the caller releases.
func (b *streamBuffer) acquireAfter(n uint64) (f *liveFragment, oldest uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, oldest = b.afterLocked(n)
	if f != nil {
		f.refs.Add(1)
	}
	return f, oldest
}

func (b *streamBuffer) afterLocked(n uint64) (f *liveFragment, oldest uint64) {
	if len(b.frags) == 0 {
		return nil, 0
	}
	oldest = b.frags[0].Meta.Number
	// Binary search: frags is sorted by number.
	lo, hi := 0, len(b.frags)
	for lo < hi {
		m := (lo + hi) / 2
		if b.frags[m].Meta.Number <= n {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(b.frags) {
		f = b.frags[lo]
	}
	return f, oldest
}

// get returns the buffered fragment with number n. For Meta only: see acquire.
func (b *streamBuffer) get(n uint64) *liveFragment {
	f, _ := b.after(n - 1)
	if f != nil && f.Meta.Number == n {
		return f
	}
	return nil
}

// acquire returns the buffered fragment with number n with a reference to its Chunk, which the
// caller releases; nil when n is not buffered.
func (b *streamBuffer) acquire(n uint64) *liveFragment {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, _ := b.afterLocked(n - 1)
	if f == nil || f.Meta.Number != n {
		return nil
	}
	f.refs.Add(1)
	return f
}

// archived returns the buffered fragments the archived-media APIs list, in number order: of a
// stream that keeps data, those the store has made durable (the store lists them too; this
// covers the moment between the commit and its index being readable everywhere), of a
// retention-0 stream every one. For Meta only.
func (b *streamBuffer) archived() []*liveFragment {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*liveFragment, 0, len(b.frags))
	for _, f := range b.frags {
		if !f.failed.Load() && !(b.limits.Archived && f.unsynced.Load()) {
			out = append(out, f)
		}
	}
	return out
}

// snapshot returns the buffered fragments in number order (the slice is a copy; the fragments are
// shared). For Meta only.
func (b *streamBuffer) snapshot() []*liveFragment {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*liveFragment(nil), b.frags...)
}

// addBuffered appends to stored, a listing from the store, the fragments the archived-media APIs
// list from the buffer (see archived) that selects takes and stored lacks. The order is the
// caller's to restore. For a stream that keeps data, a durable buffered fragment older than the
// store's first one (first, asked only when such a candidate turns up; ok false: the store has
// none) was deleted by the store since (a byte cap or the disk quota can delete fragments this
// recent) and is not listed, as after retention.
func (b *streamBuffer) addBuffered(stored []store.FragmentMeta, selects func(store.FragmentMeta) bool, first func() (uint64, bool)) []store.FragmentMeta {
	seen := make(map[uint64]bool, len(stored))
	for _, f := range stored {
		seen[f.Number] = true
	}
	var floor uint64
	asked := false
	for _, f := range b.archived() {
		if seen[f.Meta.Number] || !selects(f.Meta) {
			continue
		}
		if b.isArchived() {
			if !asked {
				n, ok := first()
				floor, asked = n, true
				if !ok {
					floor = ^uint64(0)
				}
			}
			if f.Meta.Number < floor {
				continue
			}
		}
		stored = append(stored, f.Meta)
	}
	return stored
}

// isArchived reports whether the stream keeps its data in the store.
func (b *streamBuffer) isArchived() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limits.Archived
}

// lastNumber returns the highest published fragment number (0 when none).
func (b *streamBuffer) lastNumber() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// close marks the stream deleted and releases its memory.
func (b *streamBuffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return
	}
	b.gone = true
	for _, f := range b.frags {
		f.release()
	}
	b.frags, b.bytes = nil, 0
}

func (b *streamBuffer) isGone() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gone
}

// liveCache maps stream names to their buffers: the node's chunk cache. A deleted and re-created
// stream gets a fresh buffer.
type liveCache struct {
	mu      sync.Mutex
	streams map[string]*streamBuffer
}

func newLiveCache() *liveCache { return &liveCache{streams: make(map[string]*streamBuffer)} }

// stream returns the buffer of the named stream arn ("": whichever the name has), creating it with
// limits l when absent. The buffer of another stream of that name (deleted on another node, and
// created again) is closed and replaced: replaced is true then.
func (h *liveCache) stream(name, arn string, l bufferLimits) (b *streamBuffer, replaced bool) {
	h.mu.Lock()
	b = h.streams[name]
	var stale *streamBuffer
	if b != nil && arn != "" && b.arn != "" && b.arn != arn {
		stale, b = b, nil
	}
	if b == nil {
		b = newStreamBuffer(l)
		b.arn = arn
		h.streams[name] = b
	}
	h.mu.Unlock()
	if stale != nil {
		stale.close()
	}
	return b, stale != nil
}

// lookup returns the named stream's buffer, nil when there is none.
func (h *liveCache) lookup(name string) *streamBuffer {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[name]
}

// dropARN closes and forgets the named stream's buffer (DeleteStream) unless it is another stream's
// than arn's ("": whichever stream's).
func (h *liveCache) dropARN(name, arn string) {
	h.mu.Lock()
	b := h.streams[name]
	if b == nil || arn != "" && b.arn != "" && b.arn != arn {
		h.mu.Unlock()
		return
	}
	delete(h.streams, name)
	h.mu.Unlock()
	b.close()
}

// evictAll has every buffer drop what its limits no longer keep (media's sweep): a buffer evicts
// by itself only when its stream publishes or a fragment becomes durable.
func (h *liveCache) evictAll() {
	h.mu.Lock()
	bufs := make([]*streamBuffer, 0, len(h.streams))
	for _, b := range h.streams {
		bufs = append(bufs, b)
	}
	h.mu.Unlock()
	for _, b := range bufs {
		b.evict()
	}
}

// dropIf closes b and forgets it if it is still the named stream's buffer.
func (h *liveCache) dropIf(name string, b *streamBuffer) {
	h.mu.Lock()
	if h.streams[name] == b {
		delete(h.streams, name)
	}
	h.mu.Unlock()
	b.close()
}
