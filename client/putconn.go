package client

// One PutMedia connection of a Producer: the request, its body writer and its ACK reader.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/internal/bufpool"
)

// errConnEnded reports a response that ended while fragments sent on it were not final.
var errConnEnded = errors.New("connection ended before every fragment was acknowledged")

// connection runs one PutMedia request. It returns nil when it ended cleanly (every fragment sent on
// it final, and the body ended because of Close or a track change), else why it broke; progress
// says whether any fragment became final on it.
func (p *Producer) connection(finalEvent string) (progress bool, err error) {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()

	p.mu.Lock()
	var first *entry
	for _, e := range p.window {
		if !e.final {
			first = e
			break
		}
	}
	p.stats.Connections++
	p.mu.Unlock()
	if first == nil {
		return false, nil
	}

	epCtx, epCancel := p.controlCtx(ctx)
	ep, err := p.c.DataEndpoint(epCtx, p.cfg.Stream, types.APINamePutMedia)
	epCancel()
	if err != nil {
		return false, err
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep+"/putMedia", uploadBody{pr})
	if err != nil {
		return false, err
	}
	if strings.HasPrefix(p.cfg.Stream, "arn:") {
		req.Header.Set("x-amzn-stream-arn", p.cfg.Stream)
	} else {
		req.Header.Set("x-amzn-stream-name", p.cfg.Stream)
	}
	req.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	startNS := first.timecode * int64(first.scale)
	req.Header.Set("x-amzn-producer-start-timestamp", fmt.Sprintf("%d.%03d", startNS/1e9, startNS%1e9/1e6))
	req.Header.Set("x-amzn-fragment-acknowledgment-required", "1")
	req.ContentLength = -1
	if err := p.c.Sign(ctx, req, nil); err != nil {
		return false, err
	}

	conn := &putConn{p: p, finalEvent: finalEvent, byNumber: map[string]*entry{}}
	writeDone := make(chan error, 1)
	go func() { writeDone <- conn.write(ctx, pw, first) }()

	// The staleness check: a connection that receives nothing for StalenessTimeout while a
	// fragment sent on it waits for its final ACK is given up (ctx), whether the response has
	// begun or not. Every byte of the response pushes it back.
	stale, heard := conn.watchStaleness(ctx, cancel)
	staleErr := func(err error) error {
		if stale.Load() {
			return fmt.Errorf("putmedia %s: nothing received for %v with fragments waiting for their ACK: the connection is taken as dead", p.cfg.Stream, p.cfg.StalenessTimeout)
		}
		return err
	}

	// On failure the writer is stopped both ways: closing the pipe ends a Write in progress, and
	// cancelling ctx wakes it when it waits for the next fragment (the transport may have taken
	// everything written so far before the server answered).
	resp, err := p.c.do(req)
	if err != nil {
		pr.CloseWithError(err)
		cancel()
		<-writeDone
		return false, staleErr(fmt.Errorf("putmedia %s: %w", p.cfg.Stream, err))
	}
	p.connected = true
	defer resp.Body.Close()
	heard()
	if resp.StatusCode/100 != 2 {
		apiErr := newAPIError("PutMedia", resp)
		pr.CloseWithError(apiErr)
		cancel()
		<-writeDone
		return false, apiErr
	}
	// The endpoint answers: the failures are over (status lines), and a spool's pump may fill
	// the window again.
	p.mu.Lock()
	p.stats.LastError, p.stats.Since = "", time.Time{}
	p.changed.Broadcast()
	p.mu.Unlock()
	readErr := ReadAcks(heardReader{resp.Body, heard}, conn.ack)
	// The response is over: stop the writer (it may be blocked on the pipe) and collect it.
	pr.CloseWithError(errConnEnded)
	cancel()
	werr := <-writeDone

	p.mu.Lock()
	defer p.mu.Unlock()
	progress = conn.progress
	var ae *AckErr
	if errors.As(conn.stopErr, &ae) && ae.Ack.ErrorID == 4000 && ae.Ack.FragmentNumber == "" && conn.allFinalLocked() {
		// The server ended a connection on which nothing waited for an ACK, between fragments:
		// it sent nothing for PutMediaReadTimeout (a camera away for a while, a paced backlog).
		// No failure: the next fragment opens a new connection at once.
		return progress, nil
	}
	if conn.stopErr != nil {
		return progress, conn.stopErr
	}
	if readErr != nil {
		return progress, staleErr(fmt.Errorf("putmedia %s: reading ACKs: %w", p.cfg.Stream, readErr))
	}
	for _, e := range conn.sent {
		if !e.final {
			if werr != nil && !errors.Is(werr, errConnEnded) {
				return progress, fmt.Errorf("putmedia %s: %w", p.cfg.Stream, werr)
			}
			return progress, fmt.Errorf("putmedia %s: %w", p.cfg.Stream, errConnEnded)
		}
	}
	if !conn.bodyEnded {
		return progress, fmt.Errorf("putmedia %s: the server ended the response early", p.cfg.Stream)
	}
	return progress, nil
}

// watchStaleness checks the connection until ctx ends: when nothing was received (heard, from
// the response's reader) for StalenessTimeout while a fragment sent on it is not final, it sets
// stale and calls cancel. With StalenessTimeout negative it does nothing.
func (c *putConn) watchStaleness(ctx context.Context, cancel func()) (stale *atomic.Bool, heard func()) {
	p := c.p
	stale = new(atomic.Bool)
	var last atomic.Int64 // UnixNano of the connection's start or the last byte received
	last.Store(time.Now().UnixNano())
	heard = func() { last.Store(time.Now().UnixNano()) }
	d := p.cfg.StalenessTimeout
	if d <= 0 {
		return stale, heard
	}
	go func() {
		t := time.NewTicker(max(d/4, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if now.Sub(time.Unix(0, last.Load())) < d {
					continue
				}
				p.mu.Lock()
				waiting := !c.allFinalLocked()
				p.mu.Unlock()
				if waiting {
					stale.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	return stale, heard
}

// heardReader calls heard whenever bytes arrive.
type heardReader struct {
	r     io.Reader
	heard func()
}

func (r heardReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.heard()
	}
	return n, err
}

// putConn is the state of one PutMedia connection.
type putConn struct {
	p          *Producer
	finalEvent string

	// guarded by p.mu
	sent      []*entry // in order
	buffered  int      // BUFFERING acks seen: sent[buffered] is the next fragment to be numbered
	byNumber  map[string]*entry
	progress  bool
	bodyEnded bool  // the writer ended the body on purpose (Close or track change)
	stopErr   error // an ERROR ack that ends this connection
}

// write sends the stream header and then fragments as they come, until Close (all sent), a
// fragment with different tracks, or an error.
func (c *putConn) write(ctx context.Context, pw *io.PipeWriter, first *entry) error {
	p := c.p
	if _, err := pw.Write(first.header); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.changed.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	var last *entry // last entry written (entries after it in the window are next)
	for {
		p.mu.Lock()
		var next *entry
		for {
			if ctx.Err() != nil || p.err != nil {
				p.mu.Unlock()
				pw.CloseWithError(errConnEnded)
				return errConnEnded
			}
			next = p.nextLocked(last)
			if next != nil {
				break
			}
			if p.closing {
				// Everything is written: end the body once every fragment is final, so that the
				// server sees a clean end only after the last ACK (PIC does the same).
				if c.allFinalLocked() {
					c.bodyEnded = true
					p.mu.Unlock()
					return pw.Close()
				}
			}
			p.changed.Wait()
		}
		if !bytes.Equal(first.header, next.header) {
			// New tracks: finish this connection; the next one starts with the new header.
			for ctx.Err() == nil && p.err == nil && !c.allFinalLocked() {
				p.changed.Wait()
			}
			c.bodyEnded = true
			p.mu.Unlock()
			return pw.Close()
		}
		if next.sent > 0 {
			p.stats.Resent++
		}
		next.sent++
		next.writing = true
		c.sent = append(c.sent, next)
		data := next.data
		p.mu.Unlock()
		_, err := pw.Write(data)
		p.mu.Lock()
		next.writing = false
		if next.final {
			p.recycle(data)
		}
		p.mu.Unlock()
		if err != nil {
			return err
		}
		last = next
	}
}

// nextLocked returns the first non-final entry after last in the window (from the start when last
// is nil or gone).
func (p *Producer) nextLocked(last *entry) *entry {
	i := 0
	if last != nil {
		for j, e := range p.window {
			if e == last {
				i = j + 1
				break
			}
		}
	}
	for ; i < len(p.window); i++ {
		if !p.window[i].final {
			return p.window[i]
		}
	}
	return nil
}

func (c *putConn) allFinalLocked() bool {
	for _, e := range c.sent {
		if !e.final {
			return false
		}
	}
	return true
}

// ack handles one ACK event of this connection.
func (c *putConn) ack(a Ack) error {
	p := c.p
	if p.cfg.OnAck != nil {
		p.cfg.OnAck(a)
	}
	if a.EventType == AckIdle {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := c.match(a)
	switch a.EventType {
	case AckBuffering:
		return nil
	case AckReceived, AckPersisted:
		if e != nil && (a.EventType == c.finalEvent || a.EventType == AckPersisted) && !e.final {
			p.finishLocked(e, nil)
			c.progress = true
			p.trimLocked()
			p.changed.Broadcast()
		}
		return nil
	case AckError:
		ae := &AckErr{Ack: a}
		if ae.Retryable() || fatalAck(a.ErrorID) {
			c.stopErr = ae
			return ae // ends ReadAcks: reconnect, or stop
		}
		if e == nil { // an error before the server numbered a fragment: the one it was reading
			if c.buffered < len(c.sent) {
				e = c.sent[c.buffered]
			} else {
				for _, s := range c.sent {
					if !s.final {
						e = s
						break
					}
				}
			}
		}
		if e != nil {
			if e.number == "" {
				e.number = a.FragmentNumber
			}
			p.finishLocked(e, ae)
			c.progress = true
			p.trimLocked()
			p.changed.Broadcast()
		}
		// The server may close the connection after an ERROR; if it does, the next connection
		// goes on with the next fragment.
		return nil
	}
	return nil
}

// match finds the fragment an ACK is about: BUFFERING acks number the fragments in send order;
// later events are looked up by number, else by timecode.
func (c *putConn) match(a Ack) *entry {
	if a.EventType == AckBuffering && c.buffered < len(c.sent) {
		e := c.sent[c.buffered]
		if e.timecode != a.FragmentTimecode {
			// Not the expected one: find it by timecode among the unnumbered.
			for i := c.buffered; i < len(c.sent); i++ {
				if c.sent[i].timecode == a.FragmentTimecode {
					e = c.sent[i]
					c.buffered = i
					break
				}
			}
		}
		c.buffered++
		if a.FragmentNumber != "" {
			e.number = a.FragmentNumber
			c.byNumber[a.FragmentNumber] = e
		}
		return e
	}
	if a.FragmentNumber != "" {
		if e := c.byNumber[a.FragmentNumber]; e != nil {
			return e
		}
	}
	for _, e := range c.sent {
		if !e.final && e.timecode == a.FragmentTimecode && (e.number == "" || a.FragmentNumber == "") {
			return e
		}
	}
	return nil
}

// uploadBody is the PutMedia request body. It implements io.WriterTo so that net/http's HTTP/1
// transport, which copies a chunked body through a 32 KB buffer and writes each piece as one chunk
// and one syscall, gets pieces of up to 1 MiB instead (a 5 MB fragment: 5 chunks, not 160).
type uploadBody struct{ r *io.PipeReader }

const uploadChunk = 1 << 20

func (b uploadBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b uploadBody) Close() error { return b.r.Close() }

func (b uploadBody) WriteTo(w io.Writer) (int64, error) {
	buf := bufpool.Get(uploadChunk)[:uploadChunk]
	defer bufpool.Put(buf)
	var n int64
	for {
		k, err := b.r.Read(buf)
		if k > 0 {
			wk, werr := w.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				b.r.CloseWithError(werr)
				return n, werr
			}
		}
		if err == io.EOF { //nolint:errorlint // io.Reader contract
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
