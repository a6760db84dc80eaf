package server

// The persister of a PutMedia session: the fragments the parser hands on go to the store and the
// live buffer, in order, and their PERSISTED acks follow as they become durable (server/doc.go
// describes the pipeline).

import (
	"context"
	"errors"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/server/store"
)

// persistJob is one received fragment on its way to the store and the live buffer.
type persistJob struct {
	timecode int64
	meta     store.FragmentMeta
	chunk    []byte
	buf      []byte    // pooled memory holding chunk (putParser.chunk)
	received time.Time // when it was RECEIVED (kvs_persisted_ack_seconds)
}

// maxUnsynced bounds the fragments of one upload written to the store but not yet durable
// (their PERSISTED ack pending); the persister waits for the oldest beyond it.
const maxUnsynced = 8

// durableWait is a fragment written to the store, waiting to be durable before its PERSISTED.
type durableWait struct {
	timecode int64
	number   uint64
	wait     func(context.Context) error
	frag     *liveFragment // its Meta stays valid after the chunk's release
	received time.Time
}

// persist stores and publishes fragments in order; see handlePutMedia. A fragment is published
// and written (Store.AppendAsync) as soon as its turn comes, without waiting for the previous
// one to be durable: live delivery does not wait for the disk, and consecutive fragments share
// a group commit in the FS store. ackDurable sends the PERSISTED acks in order.
func (p *putSession) persist(jobs <-chan persistJob) {
	st := p.m.s.store
	durable := make(chan durableWait, maxUnsynced)
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		p.ackDurable(durable)
	}()
	defer func() {
		close(durable)
		<-ackerDone
	}()
	for job := range jobs {
		n := job.meta.Number
		if p.ctx.Err() != nil {
			p.skip(job)
			continue
		}
		if err := p.buf.seq.turn(p.ctx, n, p, p.m.contendedTimeout); err != nil {
			p.skip(job)
			continue
		}
		// Live readers get the fragment now, not an fsync later (as with KVS, GetMedia does not
		// wait for persistence). Its turn came, so every lower number is already written to the
		// store and published. The buffer keeps it until it is durable (unsynced), so a reader
		// that falls back to the store never finds a hole that is not one. If the append fails,
		// the fragment was seen live but is not in the archive: readers from the store skip the gap.
		lf := &liveFragment{Meta: job.meta, Timecode: job.timecode, Chunk: job.chunk, Published: time.Now(), pool: job.buf}
		lf.refs.Store(1) // the session's, until the store has the bytes
		lf.unsynced.Store(true)
		p.m.publish(p.name, p.buf, lf)
		wait, ok := p.store(st, job)
		lf.release() // the store keeps no reference to the chunk (Store.AppendAsync)
		p.buf.seq.done(n)
		if !ok {
			lf.failed.Store(true)
		}
		if wait == nil {
			lf.unsynced.Store(false)
			if ok {
				p.done.Add(1) // a stream that keeps no data: published is as far as it goes
			}
			continue
		}
		durable <- durableWait{timecode: job.timecode, number: n, wait: wait, frag: lf, received: job.received}
	}
}

// ackDurable waits for each written fragment, in order, to be durable and acknowledges it
// with PERSISTED; a failure fails the session (storeFailed). Once the session has failed at a
// fragment, the fragments after it get no PERSISTED, durable or not: the acks stay in fragment
// order, and the upload's one ERROR, its last ack, names the fragment its producer resends from
// (the C producer's PIC frees its buffer up to a PERSISTED fragment's timecode, so a PERSISTED
// for a later fragment before the ERROR would lose the failed one).
func (p *putSession) ackDurable(ws <-chan durableWait) {
	for w := range ws {
		// Once written, an append completes even if the client leaves.
		err := w.wait(context.WithoutCancel(p.ctx))
		if err != nil {
			w.frag.failed.Store(true)
		}
		w.frag.unsynced.Store(false)
		p.buf.evict() // it may go now
		if err != nil {
			p.storeFailed(err, w.number, w.timecode)
			continue
		}
		if p.failedBefore(w.number) {
			p.persisted(w) // stored all the same: counted and told, not acknowledged
			continue
		}
		tc := w.timecode
		p.ack(ackPersisted, &tc, w.number, nil)
		p.persisted(w)
	}
}

// failedBefore reports whether the session has failed at a fragment numbered below n (a failure
// that names no fragment, a header or a read error between fragments, came after every fragment
// numbered so far).
func (p *putSession) failedBefore(n uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failure != nil && p.failure.Number != 0 && p.failure.Number < n
}

// skip gives up a RECEIVED fragment that the session can no longer store (the session failed, the
// client left or the server is draining). No ack names it: it comes after the fragment the
// upload's ERROR names (or the ERROR names none, and the producer sends again everything not
// PERSISTED), and an ERROR of its own would go out before that one and the PERSISTED acks
// still due, which is out of order.
func (p *putSession) skip(job persistJob) {
	p.buf.seq.done(job.meta.Number)
	bufpool.Put(job.buf) // never published: nobody else holds the chunk
}

// store starts appending job unless the stream keeps no data. wait (nil when nothing was
// written) reports when the fragment is durable; ok is false after a fatal error.
func (p *putSession) store(st store.Store, job persistJob) (wait func(context.Context) error, ok bool) {
	if p.liveOnly {
		// Retention may have been raised since: look again (cheap next to an fsync).
		info, err := st.GetStream(context.WithoutCancel(p.ctx), p.name)
		if err != nil {
			p.storeFailed(err, job.meta.Number, job.timecode)
			return nil, false
		}
		if info.RetentionHours <= 0 {
			return nil, true
		}
		p.liveOnly = false
		p.buf.setLimits(p.m.limitsFor(info))
	}
	// Once started, an append completes even if the client leaves: a fragment that may be stored
	// must also be published, or a live reader would step over its number.
	wait, err := st.AppendAsync(context.WithoutCancel(p.ctx), p.name, job.meta, job.chunk)
	switch {
	case err == nil:
		return wait, true
	case errors.Is(err, store.ErrNoRetention):
		p.liveOnly = true
		p.buf.setLimits(p.m.liveOnlyLimits)
		return nil, true
	default:
		p.storeFailed(err, job.meta.Number, job.timecode)
		return nil, false
	}
}

// storeFailed fails the session for an error storing fragment number (cluster timecode tc); the
// ERROR ack names that fragment.
func (p *putSession) storeFailed(err error, number uint64, tc int64) {
	switch {
	case errors.Is(err, store.ErrStreamNotFound):
		p.fail(newAckErr(4008, "stream %s is gone: %v", p.name, err).fragment(number, tc))
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrNotOwner):
		// A cluster's backends did not answer in time, or another node took the stream: worth
		// a retry (producers retry 5000), where the stream is written then.
		p.log.Warn("put media: store append", "err", err)
		p.fail(newAckErr(5000, "store: %v", err).fragment(number, tc))
	default:
		p.log.Error("put media: store append", "err", err)
		p.fail(newAckErr(5001, "store: %v", err).fragment(number, tc))
	}
}
