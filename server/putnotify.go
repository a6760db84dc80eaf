package server

import (
	"net/http"
	"time"
)

// What an upload tells the operator's side as it goes (metrics.go, events.go): its start and end,
// each PERSISTED ack. The parser counts body bytes and RECEIVED fragments itself (putparser.go,
// putSession.Read), and errorAck the ERROR acks.

// persisted counts a PERSISTED ack and tells the sinks that want fragment events.
func (p *putSession) persisted(w durableWait) {
	s := p.m.s
	s.metrics.persistedAck.Observe(time.Since(w.received).Seconds())
	p.done.Add(1)
	if !s.events.wantFragments() {
		return
	}
	meta := w.frag.Meta
	tc := w.timecode
	s.events.publish(&Event{Type: EventFragmentPersisted, Stream: p.name, FragmentNumber: formatFragmentNumber(meta.Number),
		FragmentTimecode: &tc, ServerTime: &meta.ServerTime, ProducerTime: &meta.ProducerTime,
		DurationMillis: meta.Duration.Milliseconds(), Size: meta.Size})
}

// uploadStarted and uploadEnded bracket an upload this node stores: the active uploads gauge and
// the upload events.
func (m *media) uploadStarted(p *putSession, r *http.Request) {
	m.uploads.Add(1)
	m.s.metrics.activeUploads.Inc()
	m.s.events.publish(&Event{Type: EventUploadStarted, Stream: p.name, Remote: r.RemoteAddr})
}

func (m *media) uploadEnded(p *putSession) {
	ev := &Event{Type: EventUploadEnded, Stream: p.name, Fragments: int(p.done.Load()), Bytes: p.received}
	if p.endErr != nil {
		ev.ErrorID, ev.ErrorCode, ev.Reason = p.endErr.ID, p.endErr.Code, p.endErr.Message
	}
	m.s.events.publish(ev)
	m.s.metrics.activeUploads.Dec()
	m.uploads.Add(-1)
}
