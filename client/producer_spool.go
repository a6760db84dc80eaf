package client

// The spool side of a Producer: Send writes to the spool, and the pump goroutine feeds the window
// from it, oldest first, pacing the backlog at SpoolRate.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
)

// spool writes e to the spool (Send with a spool). The encoded fragment goes back to the pool: the
// pump reads it back from the spool when its turn comes.
func (p *Producer) spool(ctx context.Context, e *entry) error {
	p.mu.Lock()
	err, closing := p.err, p.closing
	p.mu.Unlock()
	switch {
	case err != nil:
		bufpool.Put(e.data)
		return err
	case closing:
		bufpool.Put(e.data)
		return errors.New("producer: Send after Close")
	}
	if p.cfg.SpoolWait {
		// A record is its header (under 100 bytes), the stream header and the fragment.
		if err := p.cfg.Spool.waitRoom(ctx, p.ctx.Done(), int64(spoolRecordHeaderSize+len(e.header)+len(e.data))); err != nil {
			bufpool.Put(e.data)
			return fmt.Errorf("producer: %w", err)
		}
		p.mu.Lock()
		err = p.err
		p.mu.Unlock()
		if err != nil { // stopped while it waited
			bufpool.Put(e.data)
			return err
		}
	}
	_, err = p.cfg.Spool.append(e.header, e.data, e.timecode, e.scale)
	size := len(e.data)
	bufpool.Put(e.data)
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	p.mu.Lock()
	p.stats.Fragments++
	p.stats.Bytes += int64(size)
	p.mu.Unlock()
	return nil
}

// pump moves the spool's records into the window in order until the spool is sealed and read to
// its end, or the producer stops. Backlog (a record with newer ones queued behind it) is paced at
// SpoolRate; the newest record goes at once.
func (p *Producer) pump() {
	defer close(p.pumpDone)
	var due time.Time // when the next backlog record may go
	var last []byte   // the previous record's stream header
	for {
		rec, queued, err := p.cfg.Spool.next(p.ctx)
		if errors.Is(err, io.EOF) {
			p.mu.Lock()
			p.pumped = true
			p.changed.Broadcast()
			p.mu.Unlock()
			return
		}
		if err != nil {
			if p.ctx.Err() == nil {
				p.stop(err)
			}
			return
		}
		if rate := p.cfg.SpoolRate; rate > 0 && queued > 0 {
			if wait := time.Until(due); wait > 0 {
				if err := sleepCtx(p.ctx, wait); err != nil {
					bufpool.Put(rec.Body)
					return
				}
			}
			if now := time.Now(); due.Before(now) {
				due = now
			}
			due = due.Add(time.Duration(float64(rec.size()) / float64(rate) * float64(time.Second)))
		} else {
			due = time.Time{}
		}
		if string(rec.Header) == string(last) {
			rec.Header = last // entries with the same tracks share one header
		}
		last = rec.Header
		e := &entry{header: rec.Header, data: rec.Body, timecode: rec.Timecode, scale: rec.Scale, seq: rec.Seq}
		if err := p.enqueue(p.ctx, e); err != nil {
			bufpool.Put(rec.Body)
			return
		}
	}
}

// abandonLocked takes e out of the window without a verdict: the producer stopped, and the
// spool keeps e for a later one.
func (p *Producer) abandonLocked(e *entry) {
	e.final = true
	if !e.writing {
		p.recycle(e.data)
	}
	e.data = nil
}
