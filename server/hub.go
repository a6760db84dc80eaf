package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// liveFragment is one complete fragment held in a stream's in-memory buffer: its metadata and the
// stored chunk bytes (EBML header, Segment, Info, Tracks, KVS Tags, Cluster). Chunk is immutable
// once published; readers share it without copying.
//
// Chunk's memory is recycled: the PutMedia session that made it reuses it for a later fragment
// once nobody holds a reference (a fresh multi-megabyte buffer per fragment costs page faults and
// zeroing: with reuse, put-media of a 201 MB file took 0.81 s instead of 0.89 s in interleaved
// runs, and a 200-stream kvs bench peaked at 587 MB RSS instead of 733 MB).
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

	refs atomic.Int32
	home chan []byte // takes Chunk back when the last reference goes; nil: left to the GC
}

// release drops a reference to Chunk; the last one hands the memory back to its session. It does
// nothing on a nil fragment.
func (f *liveFragment) release() {
	if f == nil || f.refs.Add(-1) != 0 || f.home == nil {
		return
	}
	select {
	case f.home <- f.Chunk[:0]:
	default: // the session has enough spare buffers: the GC takes this one
	}
}

// bufferLimits bound one stream's in-memory buffer. Whichever limit is reached first evicts the
// oldest fragments; the newest fragment is always kept.
type bufferLimits struct {
	MaxBytes int64
	MaxAge   time.Duration
}

// Defaults: a stream that keeps data on disk needs only a short window in memory for live tailing
// (slower readers fall back to the store, which serves recent fragments from the page cache): 5 s
// or 4 MiB (a 20 s kvs bench of 200 streams peaked at 824 MB RSS with it, 1139 MB with 30 s /
// 16 MiB, the extra being freshly faulted memory). A retention-0 stream has nothing else, so it gets
// the window KVS documents for its live buffer (about 5 minutes, 200 MB).
var (
	archivedBufferLimits = bufferLimits{MaxBytes: 4 << 20, MaxAge: 5 * time.Second}
	liveOnlyBufferLimits = bufferLimits{MaxBytes: 200 << 20, MaxAge: 5 * time.Minute}
)

// streamBuffer is the in-memory buffer of one stream plus its live subscribers. Subscribers get a
// notice ("something new was published") on a 1-slot channel with a non-blocking send and pull the
// bytes themselves: a slow reader never stalls the producer and never loses data, because whatever it
// missed is still in the buffer or in the store.
type streamBuffer struct {
	mu     sync.Mutex
	frags  []*liveFragment // ordered by Meta.Number
	bytes  int64
	limits bufferLimits
	last   uint64 // highest published number (0: none yet)
	subs   map[chan struct{}]struct{}
	gone   bool // the stream was deleted

	seq sequencer // orders the appends of concurrent PutMedia sessions
}

func newStreamBuffer(l bufferLimits) *streamBuffer {
	return &streamBuffer{limits: l, subs: make(map[chan struct{}]struct{})}
}

// setLimits changes the buffer's limits (for example after UpdateDataRetention).
func (b *streamBuffer) setLimits(l bufferLimits) {
	b.mu.Lock()
	b.limits = l
	b.evictLocked(time.Now())
	b.mu.Unlock()
}

// publish adds f (whose number must be greater than every published one) and wakes subscribers.
func (b *streamBuffer) publish(f *liveFragment) {
	b.mu.Lock()
	if b.gone || f.Meta.Number <= b.last {
		b.mu.Unlock()
		return
	}
	f.refs.Add(1) // the buffer's
	b.frags = append(b.frags, f)
	b.bytes += int64(len(f.Chunk))
	b.last = f.Meta.Number
	b.evictLocked(f.Published)
	for c := range b.subs {
		select {
		case c <- struct{}{}:
		default: // already notified; the reader will find everything when it looks
		}
	}
	b.mu.Unlock()
}

func (b *streamBuffer) evictLocked(now time.Time) {
	drop := 0
	for drop < len(b.frags)-1 {
		f := b.frags[drop]
		if b.bytes <= b.limits.MaxBytes && now.Sub(f.Published) <= b.limits.MaxAge || f.unsynced.Load() {
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

// snapshot returns the buffered fragments in number order (the slice is a copy; the fragments are
// shared). For Meta only.
func (b *streamBuffer) snapshot() []*liveFragment {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*liveFragment(nil), b.frags...)
}

// lastNumber returns the highest published fragment number (0 when none).
func (b *streamBuffer) lastNumber() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// subscribe returns a notice channel and a function that ends the subscription. The channel is
// closed when the stream is deleted.
func (b *streamBuffer) subscribe() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	b.mu.Lock()
	if b.gone {
		close(c)
		b.mu.Unlock()
		return c, func() {}
	}
	b.subs[c] = struct{}{}
	b.mu.Unlock()
	return c, func() {
		b.mu.Lock()
		if _, ok := b.subs[c]; ok {
			delete(b.subs, c)
		}
		b.mu.Unlock()
	}
}

// close marks the stream deleted: its memory is released and subscribers see their channel closed.
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
	for c := range b.subs {
		close(c)
		delete(b.subs, c)
	}
}

func (b *streamBuffer) isGone() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gone
}

// hub maps stream names to their buffers. A deleted and re-created stream gets a fresh buffer.
type hub struct {
	mu      sync.Mutex
	streams map[string]*streamBuffer
}

func newHub() *hub { return &hub{streams: make(map[string]*streamBuffer)} }

// stream returns the buffer of the named stream, creating it with limits l when absent.
func (h *hub) stream(name string, l bufferLimits) *streamBuffer {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.streams[name]
	if b == nil {
		b = newStreamBuffer(l)
		h.streams[name] = b
	}
	return b
}

// drop closes and forgets the named stream's buffer (DeleteStream).
func (h *hub) drop(name string) {
	h.mu.Lock()
	b := h.streams[name]
	delete(h.streams, name)
	h.mu.Unlock()
	if b != nil {
		b.close()
	}
}

// sequencer makes a stream's fragments reach the store and the buffer in number order when several
// PutMedia sessions write to one stream. A number is reserved (store.NextNumber) when a fragment's
// cluster starts, because the BUFFERING ack already carries it, but the fragment is complete only
// later; the store requires increasing numbers, and the hub publishes only increasing ones. So each
// session, once its fragment is complete, waits for its turn: until every lower number reserved on
// the stream has been committed or abandoned. With one producer per stream there is never a wait;
// with two, a fragment can wait for the other producer's open fragment to end (bounded by
// MaxFragmentDuration and PutMediaReadTimeout).
type sequencer struct {
	mu      sync.Mutex
	pending []uint64      // reserved, neither committed nor abandoned; ascending
	wake    chan struct{} // closed (and replaced) whenever pending[0] changes
}

// reserve calls next (store.NextNumber) under the sequencer's lock, so that reservation order is
// number order, and records the number as pending.
func (q *sequencer) reserve(next func() (uint64, error)) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, err := next()
	if err != nil {
		return 0, err
	}
	q.pending = append(q.pending, n)
	return n, nil
}

// turn waits until n is the lowest pending number. It returns ctx's error if ctx ends first.
func (q *sequencer) turn(ctx context.Context, n uint64) error {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 || q.pending[0] >= n {
			q.mu.Unlock()
			return nil
		}
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		w := q.wake
		q.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// done removes n from the pending numbers (committed or abandoned) and wakes waiters when that
// changes the lowest one.
func (q *sequencer) done(n uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, p := range q.pending {
		if p == n {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			if i == 0 && q.wake != nil {
				close(q.wake)
				q.wake = nil
			}
			return
		}
	}
}
