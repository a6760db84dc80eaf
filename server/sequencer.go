package server

import (
	"context"
	"sync"
	"time"
)

// sequencer makes a stream's fragments reach the store and the buffer in number order when several
// PutMedia sessions write to one stream. A number is reserved (store.NextNumber) when a fragment's
// cluster starts, because the BUFFERING ack already carries it, but the fragment is complete only
// later; the store requires increasing numbers, and the live cache takes only increasing ones. So each
// session, once its fragment is complete, waits for its turn: until every lower number reserved on
// the stream has been committed or abandoned. With one producer per stream there is never a wait;
// with two, a fragment can wait for the other producer's open fragment to end. That wait is bounded
// by how long the other producer may stay silent inside its fragment while someone waits (turn's
// stall; media.contendedTimeout, 5 s): the usual cause is a producer's own old connection, left
// half-open by a network change while the producer reconnects and goes on, which would otherwise
// hold the new connection's fragments (and live readers) for the whole PutMediaReadTimeout.
type sequencer struct {
	mu      sync.Mutex
	pending []reserved    // neither committed nor abandoned; ascending
	wake    chan struct{} // closed (and replaced) whenever pending[0] changes
}

// reserved is a pending number and what reserved it.
type reserved struct {
	n  uint64
	by holder // nil: nothing to ask (tests)
}

// holder is what reserves numbers (a putSession). When others wait for its lowest number, turn
// asks it to let go if it has stalled.
type holder interface {
	// cutIfStalled ends the holder's upload if it has been waiting for bytes inside its open
	// fragment, with none arriving, for at least d; it reports whether it did. The fragment is
	// then abandoned, which releases its number.
	cutIfStalled(d time.Duration) bool
}

// reserve calls next (store.NextNumber) under the sequencer's lock, so that reservation order is
// number order, and records the number as pending, reserved by by.
func (q *sequencer) reserve(by holder, next func() (uint64, error)) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, err := next()
	if err != nil {
		return 0, err
	}
	q.pending = append(q.pending, reserved{n: n, by: by})
	return n, nil
}

// turn waits until n is the lowest pending number. It returns ctx's error if ctx ends first.
// While it waits, the holder of the lowest number (another than self) is asked every stall/4
// whether it has stalled for stall (0: never asked).
func (q *sequencer) turn(ctx context.Context, n uint64, self holder, stall time.Duration) error {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 || q.pending[0].n >= n {
			q.mu.Unlock()
			return nil
		}
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		w, first := q.wake, q.pending[0].by
		q.mu.Unlock()
		var check <-chan time.Time // nil: never
		if stall > 0 && first != nil && first != self {
			check = time.After(stall / 4) // collected unstopped (Go ≥ 1.23)
		}
		select {
		case <-w:
		case <-check:
			first.cutIfStalled(stall)
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
		if p.n == n {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			if i == 0 && q.wake != nil {
				close(q.wake)
				q.wake = nil
			}
			return
		}
	}
}
