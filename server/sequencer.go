package server

import (
	"context"
	"sync"
)

// sequencer makes a stream's fragments reach the store and the buffer in number order when several
// PutMedia sessions write to one stream. A number is reserved (store.NextNumber) when a fragment's
// cluster starts, because the BUFFERING ack already carries it, but the fragment is complete only
// later; the store requires increasing numbers, and the live cache takes only increasing ones. So each
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
