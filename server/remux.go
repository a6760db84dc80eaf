package server

// Memory for whole fragments: an MP4 media segment (HLS and DASH) and a GetClip fragment are
// remuxed from a stored fragment read whole (mkv/fmp4 needs every frame's size before the first
// byte of its mdat), so each such request holds its fragment, and the segment made of it, for as
// long as the client takes to read it. Two things bound that: requests for the same segment at the
// same time share one (segShares: the viewers of a live stream), and the fragments being remuxed
// at once take at most remuxBytes (byteBudget: more wait their turn).

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// remuxBytes is how many bytes of stored fragments are remuxed into MP4 at once, server-wide:
// four of the largest a producer may send (store.MaxRecordSize). A request takes its fragment's
// stored size from before the fragment is read until its answer (HLS, DASH) has been written: the
// segment, about as large, is what it holds meanwhile (the stored chunk and the frames read from
// it, each as large again, only while the segment is made). GetClip takes twice the size until
// each fragment has been written: fmp4.Writer holds the frames and the segment while it writes.
// Others wait.
// Before: eight readers of a 16 MiB fragment's segment that took their time held 128 MiB, and
// viewers of a 4K camera's 60 MB fragments could push the server out of memory.
const remuxBytes = 256 << 20

// minSendRate is the least average rate, in bytes a second, at which a client must take an answer
// that holds remux budget (an MP4 media segment, a clip): such an answer is cut off once it has
// taken the write timeout plus its size at this rate (sendWithin). The write timeout alone, which
// each 64 KiB sent renews, let a client that read 2 KiB a second keep a 16 MiB segment's share for
// two hours, and sixteen such clients the whole budget, so that every other segment and clip
// waited. 64 KiB/s (512 kbit/s) is a choice, not a measurement: the segments large enough for it
// to matter (megabytes) play at far more than that, and a small segment of a low-bitrate stream
// is covered by the write timeout on top (30 s by default: 1.9 MB at 64 KiB/s).
const minSendRate = 64 << 10

// sendUntilKey is the request context's key of the time past which a pacedWriter sets no write
// deadline (sendWithin).
type sendUntilKey struct{}

// sendWithin runs send, which writes an answer of size bytes through w with a pacedWriter made of
// the request it is given, and cuts the connection's writes off once the write timeout plus size
// at m.minSendRate have passed: the pacedWriter sets no deadline past that time, and a Write in
// progress then (on a connection of Listener, one Write of megabytes renews its own deadline) is
// given a deadline of now. The cut never reaches past send: it is called off before sendWithin
// returns.
func (m *media) sendWithin(w http.ResponseWriter, r *http.Request, size int64, send func(*http.Request)) {
	d := m.writeTimeout + time.Duration(float64(size)/float64(m.minSendRate)*float64(time.Second))
	r = r.WithContext(context.WithValue(r.Context(), sendUntilKey{}, time.Now().Add(d)))
	rc := http.NewResponseController(w)
	var mu sync.Mutex
	sent := false
	t := time.AfterFunc(d, func() {
		mu.Lock()
		defer mu.Unlock()
		if !sent {
			_ = rc.SetWriteDeadline(time.Now())
		}
	})
	defer func() {
		mu.Lock()
		sent = true
		mu.Unlock()
		t.Stop()
	}()
	send(r)
}

// byteBudget is a server-wide count of bytes that requests take before they read and give back
// when done; a request waits (bounded by its context) while the rest is taken.
type byteBudget struct {
	sem     *semaphore.Weighted
	size    int64
	waiting atomic.Int64 // requests waiting for their bytes (tests)
}

func newByteBudget(size int64) *byteBudget {
	return &byteBudget{sem: semaphore.NewWeighted(size), size: size}
}

// acquire takes n bytes (the whole budget at most: a fragment larger than the budget is remuxed
// alone) and returns the function that gives them back, which may be called more than once.
func (b *byteBudget) acquire(ctx context.Context, n int64) (func(), error) {
	n = min(max(n, 1), b.size)
	if !b.sem.TryAcquire(n) {
		b.waiting.Add(1)
		err := b.sem.Acquire(ctx, n)
		b.waiting.Add(-1)
		if err != nil {
			return nil, err
		}
	}
	var once sync.Once
	return func() { once.Do(func() { b.sem.Release(n) }) }, nil
}

// segKey names a media segment: what mediaFragment or tsFragment makes it of.
type segKey struct {
	stream string
	n      uint64
	track  string // the TrackNumber parameter as given ("" for none)
	origin int64  // DASH: the period's origin
	ts     bool   // an MPEG-TS segment (getTSFragment.ts)
}

// sharedSeg is a segment made for one request and sent to every request for it that came while it
// was made or sent.
type sharedSeg struct {
	done    chan struct{} // closed when made
	body    []byte
	err     error
	refs    int    // requests holding it (segShares.mu)
	release func() // gives back what making it took, when the last request is done
}

// segShares holds the segments being made or sent.
type segShares struct {
	mu sync.Mutex
	m  map[segKey]*sharedSeg
}

// share returns the segment named key: the one being made or sent for another request, else the
// one build makes (with the function that gives back what it took); done is called when the
// caller has sent it. A segment that could not be made is not shared: its error may be its
// request's own (it ended, a TrackNumber that names no track), and the requests that waited for
// it make it themselves. Only requests at the same time share: a segment is made again for the
// next one (its duration may change when the next fragment comes, playDuration).
func (s *segShares) share(ctx context.Context, key segKey, build func() ([]byte, func(), error)) (body []byte, done func(), err error) {
	for {
		s.mu.Lock()
		sh, ok := s.m[key]
		if !ok {
			sh = &sharedSeg{done: make(chan struct{}), refs: 1}
			if s.m == nil {
				s.m = map[segKey]*sharedSeg{}
			}
			s.m[key] = sh
			s.mu.Unlock()
			s.build(key, sh, build)
			if sh.err != nil {
				return nil, nil, sh.err
			}
			return sh.body, s.dropper(key, sh), nil
		}
		sh.refs++
		s.mu.Unlock()
		select {
		case <-sh.done:
		case <-ctx.Done():
			s.dropper(key, sh)()
			return nil, nil, ctx.Err()
		}
		if sh.err == nil {
			return sh.body, s.dropper(key, sh), nil
		}
	}
}

// build makes sh with build and lets the requests waiting for it go on. A build that fails, or
// panics (net/http recovers a handler's panic and the server goes on), leaves no entry behind:
// the requests waiting make the segment themselves, and later ones do not wait for ever.
func (s *segShares) build(key segKey, sh *sharedSeg, build func() ([]byte, func(), error)) {
	defer func() {
		if v := recover(); v != nil {
			sh.err = fmt.Errorf("making segment: panic: %v", v)
			defer panic(v)
		}
		if sh.err != nil {
			s.mu.Lock()
			delete(s.m, key)
			s.mu.Unlock()
		}
		close(sh.done)
	}()
	sh.body, sh.release, sh.err = build()
}

// dropper returns the function that ends one request's hold on sh.
func (s *segShares) dropper(key segKey, sh *sharedSeg) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			sh.refs--
			last := sh.refs == 0
			if last && s.m[key] == sh {
				delete(s.m, key)
			}
			s.mu.Unlock()
			if last && sh.release != nil {
				sh.release()
			}
		})
	}
}
