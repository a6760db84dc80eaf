package server

import (
	"net/http"
	"time"
)

// What an upload tells the operator's side as it goes (metrics.go): its start and end, each
// PERSISTED ack. The parser counts body bytes and RECEIVED fragments itself (putparser.go,
// putSession.Read), and errorAck the ERROR acks.

// persisted counts a PERSISTED ack.
func (p *putSession) persisted(w durableWait) {
	p.m.s.metrics.persistedAck.Observe(time.Since(w.received).Seconds())
}

// uploadStarted and uploadEnded bracket an upload this node stores: the active uploads gauge.
func (m *media) uploadStarted(*putSession, *http.Request) { m.s.metrics.activeUploads.Inc() }

func (m *media) uploadEnded(*putSession) { m.s.metrics.activeUploads.Dec() }
