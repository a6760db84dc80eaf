// Package bufpool is the one pool of the byte buffers that hold media in kvs: the producer's
// encoded fragments and upload chunks, the FragmentReader's frame arenas, the Fragmenter's, the
// server's PutMedia arenas and stored chunks, and its GetMediaForFragmentList responses. On the
// 2-core VM kvs is measured on, a fresh multi-megabyte buffer per fragment costs more in page
// faults and zeroing than the copies into it (README, Performance), so these reuse memory, and
// they all do it here: one sizing rule, one cap, one place that decides what the GC takes.
//
// Buffers come in size classes: 64 KiB, then four classes per doubling (80, 96, 112, 128, 160,
// ... KiB) up to MaxPooled, so a new buffer is at most a quarter larger than asked for and fits
// the next fragments of about the same size when it comes back; before it allocates, Get also
// takes a pooled buffer of one of the two classes above. A buffer larger than MaxPooled (a rare
// huge fragment) is allocated at its size and left to the GC when put back, as nats-server does
// with the message blocks of unusual sizes (getMsgBlockBuf, recycleMsgBlockBuf). Free buffers wait
// in bounded free lists (KeepBytes in all), and beyond that in sync.Pools, whose memory goes back
// to the GC within two collections when nobody asks for it again.
//
// Ownership is the caller's business: Get hands a buffer over, Put takes it back, and after Put
// nothing may touch it. Where buffers are shared, the sharing protocol stays with the component
// (the server's reference-counted chunks, the Fragmenter lending its arenas until the next Next);
// only the last owner calls Put. The package is safe for concurrent use and imports only the
// standard library, so that any package of kvs, mkv included, may use it.
package bufpool

import (
	"sort"
	"sync"
)

const (
	// MinSize is the smallest class: smaller requests get a buffer of this capacity.
	MinSize = 64 << 10
	// MaxPooled is the largest class (16 MiB: a 2 s fragment of 4K video at 50 Mbit/s fits).
	// Larger buffers are not pooled.
	MaxPooled = 16 << 20
)

// sizes are the class capacities, ascending: MinSize << k times 4/4, 5/4, 6/4 and 7/4.
var sizes = func() []int {
	var s []int
	for base := MinSize; base < MaxPooled; base *= 2 {
		for q := 4; q < 8; q++ {
			s = append(s, base*q/4)
		}
	}
	return append(s, MaxPooled)
}()

// Free buffers are held in two places. Up to KeepBytes in all sit in free lists (one per class,
// newest last) that the GC does not empty; the rest go to the class's sync.Pool, which the GC
// empties within two collections. A sync.Pool alone handed a steadily reused buffer back to the
// GC whenever two collections came between its Put and the next Get, and under load (200 streams
// each storing a chunk a second) the server then faulted in fresh chunks after collections,
// which showed in the PERSISTED ack p99; the bounded free lists keep the working set, and the
// pools absorb bursts without holding memory for good.
var (
	pools = make([]sync.Pool, len(sizes)) // of *[]byte, by class

	keptMu    sync.Mutex
	kept      = make([][][]byte, len(sizes)) // by class
	keptBytes int
)

// KeepBytes bounds the free buffers held outside the GC's reach.
const KeepBytes = 64 << 20

// Get returns an empty buffer (length 0) with a capacity of at least n bytes: a pooled one of n's
// class or of one of the next two (fragments of one stream vary in size around a class boundary,
// and a buffer a class larger than needed costs less than fresh memory), else a new one of n's
// class; exactly n above MaxPooled. The caller owns it until it passes it to Put.
func Get(n int) []byte {
	if n > MaxPooled {
		return make([]byte, 0, n)
	}
	i := sort.SearchInts(sizes, n) // the smallest class that holds n
	for j := i; j < min(i+fallback+1, len(sizes)); j++ {
		if b := take(j); b != nil {
			return b
		}
	}
	return make([]byte, 0, sizes[i])
}

// take returns a free buffer of class i, or nil.
func take(i int) []byte {
	keptMu.Lock()
	if k := len(kept[i]); k > 0 {
		b := kept[i][k-1]
		kept[i][k-1] = nil
		kept[i] = kept[i][:k-1]
		keptBytes -= cap(b)
		keptMu.Unlock()
		return b
	}
	keptMu.Unlock()
	if p, ok := pools[i].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return nil
}

// fallback is how many classes above its own Get looks in before it allocates.
const fallback = 2

// Put hands b back for a later Get; nothing may use b's memory afterwards. A buffer that does not
// come from Get is fine (it serves the largest class its capacity covers); one smaller than
// MinSize or larger than MaxPooled is left to the GC.
func Put(b []byte) {
	c := cap(b)
	if c < MinSize || c > MaxPooled {
		return
	}
	i := sort.SearchInts(sizes, c+1) - 1 // the largest class that c covers
	b = b[:0]
	keptMu.Lock()
	if keptBytes+c <= KeepBytes {
		kept[i] = append(kept[i], b)
		keptBytes += c
		keptMu.Unlock()
		return
	}
	keptMu.Unlock()
	p := new([]byte) // not &b: b would move to the heap on the free-list path too
	*p = b
	pools[i].Put(p)
}

// Grow returns b with room for at least n more bytes: b itself when it has the room, else a pool
// buffer holding b's bytes, at least twice b's capacity (appends keep amortized constant cost),
// and b goes back to the pool. Only for buffers whose memory nothing else refers to.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := append(Get(max(len(b)+n, 2*cap(b))), b...)
	Put(b)
	return nb
}
