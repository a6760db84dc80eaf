package server

import (
	"io"
	"net/http"
	"time"
)

// putMediaDrainGrace is how long a PutMedia upload may take, after Server.Close, to finish the
// fragment it is receiving; then reading stops and that fragment is abandoned.
const putMediaDrainGrace = 3 * time.Second

// drainAll runs on Server.Close (after live GetMedia responses were told to end): every PutMedia
// upload stops taking new fragments (see putSession.drain).
func (m *media) drainAll() {
	m.mu.Lock()
	var all []*putSession
	for _, set := range m.sessions {
		for p := range set {
			all = append(all, p)
		}
	}
	m.mu.Unlock()
	for _, p := range all {
		p.drain(putMediaDrainGrace)
	}
}

// isClosing reports whether Server.Close has been called.
func (m *media) isClosing() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

// drain ends the upload gracefully for a server shutdown: the fragment being received may still
// complete within grace; fragments received get their PERSISTED ack; then, instead of starting
// another fragment, the upload ends with ERROR 5000 (INTERNAL_ERROR, which producers retry
// elsewhere or later). An upload idle between fragments stops at once. Unlike fail, drain does not
// cancel the session: appends in progress finish and are acknowledged.
func (p *putSession) drain(grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining || p.finished {
		return
	}
	p.draining, p.stopped = true, true
	deadline := time.Now()
	if p.fragOpen {
		deadline = deadline.Add(grace)
	}
	_ = p.rc.SetReadDeadline(deadline)
}

// setFragOpen records whether the parser is inside a fragment; it reports false (and refuses to
// open one) when the upload is draining. Closing a fragment while draining stops reading at once.
func (p *putSession) setFragOpen(open bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		p.fragOpen = false
		if !p.finished {
			_ = p.rc.SetReadDeadline(time.Now())
		}
		return !open
	}
	p.fragOpen = open
	return true
}

// isDraining reports whether drain was called.
func (p *putSession) isDraining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
}

// stoppedEarly reports whether the upload ended before its body did (an ERROR stopped reading).
func (p *putSession) stoppedEarly() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.sawEOF
}

// Lingering close of an upload that stopped reading early.
const (
	putMediaLingerTime  = 2 * time.Second
	putMediaLingerBytes = 4 << 20
)

// lingerClose ends an HTTP/1.x upload that stopped reading its body early, so that the producer
// reads the ERROR ack instead of a connection reset. The read deadline that stopped the parser
// leaves the body with a sticky error; net/http's post-handler discard then fails at once, keeps
// the connection and parses the rest of the MKV as a new request (400, then a close with unread
// data, i.e. a reset, which makes the producer's kernel drop the ack it has not read yet). So the
// handler takes the connection over: ends the chunked response, half-closes (FIN), and reads and
// drops what the producer still sends for a while before closing. HTTP/2 streams (no Hijack)
// are left to net/http, which resets only the stream.
func (p *putSession) lingerClose(r *http.Request) {
	p.m.lingering.Add(1) // before the Hijack: Server.Close waits for it (server.go)
	defer p.m.lingering.Add(-1)
	rc := p.rc
	if err := rc.Flush(); err != nil {
		return
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(p.m.writeTimeout))
	if r.ProtoAtLeast(1, 1) {
		if _, err := conn.Write([]byte("0\r\n\r\n")); err != nil { // the chunked body's end
			return
		}
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(putMediaLingerTime))
	_, _ = io.CopyN(io.Discard, brw, putMediaLingerBytes)
}

// deadlineBody bounds the time to read a request body: the read deadline set when it is made is
// cleared once the body has been read to its end, so that a streaming response that follows
// (GetMedia) is not cut by it. (HTTP/1 net/http clears it too when it starts its background read
// at the body's end; HTTP/2 streams get it cleared here.) After a read error (the deadline
// passed) it stays, so that net/http's own discard of the rest fails as fast.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

// newDeadlineBody returns body bounded to d; a request without a body (nil or http.NoBody) keeps
// it as it is.
func newDeadlineBody(w http.ResponseWriter, body io.ReadCloser, d time.Duration) io.ReadCloser {
	if body == nil || body == http.NoBody {
		return body
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return body // not supported (a test recorder)
	}
	return &deadlineBody{ReadCloser: body, rc: rc}
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done { //nolint:errorlint // io.Reader contract
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
