package server

import "time"

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
