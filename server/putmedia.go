package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// PutMedia request headers (kvs-api.md §5.1).
const (
	hdrStreamName          = "x-amzn-stream-name"
	hdrStreamARN           = "x-amzn-stream-arn"
	hdrTimecodeType        = "x-amzn-fragment-timecode-type"
	hdrProducerStartTime   = "x-amzn-producer-start-timestamp"
	maxProducerTagsPerFrag = 10 // fragment metadata items (SimpleTags outside events) per fragment (§5.2)
	// maxProducerSimpleTags bounds all producer SimpleTags of one fragment, events' pairs included:
	// what PIC queues for one fragment at most (MAX_FRAGMENT_METADATA_COUNT), e.g. 2 items, a
	// notification with 10 pairs and an image-generation event with its prefix and 10 pairs.
	maxProducerSimpleTags = 25
)

// handlePutMedia implements PutMedia (kvs-api.md §5): the body is one long MKV stream, each
// Cluster is one fragment, and the response is a stream of JSON acks written while the body is
// still being read (full duplex).
//
// Before the 200: an unknown stream is 404 ResourceNotFoundException; a missing or bad
// x-amzn-fragment-timecode-type (required, ABSOLUTE or RELATIVE) or x-amzn-producer-start-timestamp
// (decimal epoch seconds, any number of fraction digits; required for RELATIVE) is 400
// InvalidArgumentException. x-amzn-fragment-acknowledgment-required is ignored: acks are always
// sent (§13.5).
//
// Per fragment: BUFFERING when its cluster starts (the number is reserved then), RECEIVED when the
// cluster ends (the next level-1 element, a new EBML header, or the end of the body for an
// unknown-size cluster), PERSISTED once the store reports it durable (the wait of
// Store.AppendAsync). Parsing the next fragment overlaps with persisting the previous one. Retention-0 streams store nothing:
// their fragments are published to the live buffer after RECEIVED and get no PERSISTED ack (§10).
// {"EventType":"IDLE"} is sent after IdleAckInterval without another ack.
//
// An ERROR ack ends the upload (choice for §13.6): the server stops reading, lets the fragments
// already RECEIVED finish (those before the failed fragment get their PERSISTED; those after a
// fragment the store failed get no final ack, see ackDurable), sends the ERROR, the last ack,
// and ends the response. Nothing of the failed fragment is stored. Each ERROR is logged once at warn with its reason,
// which the ack cannot carry. What an ERROR names (FragmentNumber, FragmentTimecode) depends on
// where it was raised; the C producer (PIC) finds the fragment by the timecode and, without one,
// applies the error to its oldest fragment not yet PERSISTED:
//
//   - inside a fragment (after its BUFFERING): its number and cluster timecode. 4006 malformed
//     MKV or a fragment whose first video frame is not a keyframe (KVS has no dedicated code);
//     4004 a frame earlier than the previous fragment's last frame of the same track; 4001 a
//     fragment over 50 MiB (or one block over it, refused before it is read); 4002 a frame more
//     than MaxFragmentDuration after the fragment's first frame; 4007 a frame timecode that
//     overflows when scaled; 4010 a block on an undeclared track; 4000 the body failed or
//     stalled for PutMediaReadTimeout; 5000 the server is shutting down.
//   - at a cluster start (the fragment has no number yet): the cluster's timecode only. 4006 a
//     cluster before the EBML header and Tracks; 4012 more than 3 tracks; 4007 a cluster
//     timecode that overflows; 4004 a cluster timecode below the previous fragment's; 4008 the
//     stream is gone; 5000 shutting down or no fragment number.
//   - between fragments: neither. 4009 more than 10 producer metadata items for the next
//     fragment (an event's pairs, in its Tag, are part of it) or more than 25 SimpleTags; 4006
//     malformed MKV or a cluster outside a Segment; 4000 the body failed or stalled; 4008 the
//     stream was deleted during the upload; 5000 shutting down.
//   - storing a received fragment: that fragment's number and timecode. 5001 the store failed,
//     4008 the stream is gone, 5000 a cluster's PostgreSQL or object store did not answer within
//     its bounded wait or another node took the stream (both worth a retry); and 5000 for each
//     fragment RECEIVED but not stored because the upload failed first (producers retry 5000).
//
// 4011 (a track without frames) is not enforced.
//
// Several connections may put to one stream at once (§13.4: both are accepted). Fragments are
// whole clusters, so they never mix inside a fragment, only interleave fragment by fragment;
// numbers are assigned in cluster-start order and fragments are stored and published in number
// order (see sequencer), so a fragment may wait for the other connection's open fragment. It waits
// 5 s at most for one that receives nothing (a producer's old connection, half-open after a
// network change, while the producer goes on over a new one): that upload is then ended with
// ERROR 4000 naming its open fragment, whose number is skipped.
//
// A new EBML header in the body starts a new segment (new Info and Tracks) for the fragments after
// it. Producer Tags between clusters (other than AWS_KINESISVIDEO_END_OF_FRAGMENT, which is
// consumed) are kept with the next fragment, stored before its KVS tags; Tags after the last
// cluster are dropped.
func (m *media) handlePutMedia(w http.ResponseWriter, r *http.Request) {
	s := m.s
	h := r.Header
	// An error answer must not wait for the body: net/http would drain it before sending the
	// status, and a producer streams it for as long as the connection lasts. With Connection:
	// close set before the status is written, the status goes out at once and the connection ends.
	w.Header().Set("Connection", "close")
	var ref streamRef
	if v := h.Get(hdrStreamName); v != "" {
		ref.StreamName = &v
	}
	if v := h.Get(hdrStreamARN); v != "" {
		ref.StreamARN = &v
	}
	mode := h.Get(hdrTimecodeType)
	if mode != "ABSOLUTE" && mode != "RELATIVE" {
		s.writeError(w, r, invalidArgf("Header %s must be ABSOLUTE or RELATIVE.", hdrTimecodeType))
		return
	}
	var start int64
	if v := h.Get(hdrProducerStartTime); v != "" {
		var ok bool
		if start, ok = parseDecimalSeconds(v); !ok {
			s.writeError(w, r, invalidArgf("Header %s must be a decimal number of seconds since the epoch.", hdrProducerStartTime))
			return
		}
	} else if mode == "RELATIVE" {
		s.writeError(w, r, invalidArgf("Header %s is required with RELATIVE timecodes.", hdrProducerStartTime))
		return
	}
	st, err := s.lookupStream(r.Context(), ref, codeInvalidArgument)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if c := s.cfg.Cluster; c != nil {
		m.endEarlierSessions(st)
		// One writer per stream: this node, or the one whose lease it is (relay.go).
		owner, err := m.acquire(r.Context(), st.Name, h.Get(hdrRelayedBy) != "")
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if owner != "" {
			w.Header().Del("Connection") // the writer's answer decides
			m.relayPut(w, r, owner)
			return
		}
		defer c.Release(st.Name) // after the session: its appends are waited for
	}

	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex() // HTTP/2 is full duplex already and says ErrNotSupported
	// Connection: close stays on the 200 as well: an upload that ends with an ERROR stops reading
	// a body that is still arriving, and its connection cannot carry another request (see
	// lingerClose); a client must not put one back in its pool.
	if expectsContinue(r) {
		// libcurl (the C and C++ producer SDKs) sends Expect: 100-continue and holds the body
		// back until a 100 comes, or for its expect timeout (1 s) when none does. net/http
		// answers it only on the first read of the body, and never once a final status is out,
		// so say it here, before the 200 that lets acks flow ahead of the body. The error
		// answers above go out without it: the producer then never sends the body. net/http
		// writes the headers set so far on a 1xx too; Connection: close is for the final answer.
		w.Header().Del("Connection")
		w.WriteHeader(http.StatusContinue)
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", "application/json")
	// nginx holds a proxied response in its buffers by default (proxy_buffering on): the ACKs
	// of an open upload would wait there until the upload ends, and the producer resends.
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	// The session's context is not the request's: net/http cancels the request context on any
	// read error of the connection, including the read deadline that drain and fail use to stop
	// the parser, and fragments already RECEIVED must still be stored and acknowledged then
	// (TestCloseDrainsMedia under load). The session ends through fail (fatal errors, acks that
	// cannot be written) or through the body's own end or error.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	defer cancel(nil)
	p := &putSession{
		m: m, name: st.Name, arn: st.ARN, log: s.log.With("stream", st.Name, "request_id", requestID(r)),
		buf: m.buffer(st), w: w, rc: rc, ctx: ctx, cancel: cancel,
		liveOnly: st.RetentionHours <= 0, relative: mode == "RELATIVE", startNanos: start,
	}
	p.lastRead.Store(time.Now().UnixNano())
	m.addSession(p)
	defer m.removeSession(p)
	p.ingest = s.metrics.streams.get(st.Name, st.ARN, func() ([]store.Stream, error) { return s.store.ListStreams(ctx) })
	m.uploadStarted(p, r)
	if !p.liveOnly {
		// Ready the stream's segment and fragment numbers while the first fragment arrives,
		// so that its PERSISTED ack waits for neither (when a fleet of cameras connects at
		// once, those are hundreds of directory fsyncs and bbolt commits in one second). An
		// error here shows again, and is answered, when the fragment is stored.
		// The handler owns this goroutine and waits for it before it returns, so nothing of an
		// upload outlives its handler (and Server.Close, which waits for handlers, or a store
		// closed after it, never meets a Prepare still running).
		prepared := make(chan struct{})
		defer func() {
			cancel(nil) // a Prepare still running (a slow store) gives up
			<-prepared
		}()
		go func() {
			defer close(prepared)
			if err := s.store.Prepare(ctx, p.name); err != nil && ctx.Err() == nil {
				p.log.Debug("put media: prepare", "err", err)
			}
		}()
	}
	p.run(r.Body)
	m.uploadEnded(p) // before the linger: the upload is over for whoever counts
	if p.stoppedEarly() {
		p.lingerClose(r) // shutdown.go
	}
}

// expectsContinue reports whether r asks for a 100 Continue before it sends its body (RFC 9110
// §10.1.1: the only expectation defined; the token is case-insensitive).
func expectsContinue(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1) && strings.EqualFold(strings.TrimSpace(r.Header.Get("Expect")), "100-continue")
}

// parseDecimalSeconds parses "1700000000", "1700000000.5" or "1700000000.123456789012" as Unix
// nanoseconds (fraction digits beyond 9 are dropped).
func parseDecimalSeconds(v string) (int64, bool) {
	whole, frac, _ := strings.Cut(v, ".")
	if whole == "" || len(whole) > 11 {
		return 0, false
	}
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || sec < 0 || whole[0] == '+' || sec >= math.MaxInt64/int64(time.Second) { // as nanoseconds, past 2262
		return 0, false
	}
	var ns int64
	for i, c := range []byte(frac) {
		if c < '0' || c > '9' {
			return 0, false
		}
		if i < 9 {
			ns = ns*10 + int64(c-'0')
		}
	}
	for i := len(frac); i < 9; i++ {
		ns *= 10
	}
	return sec*1e9 + ns, true
}

var errReadAborted = errors.New("put media: reading stopped")

// putSession is one PutMedia connection.
type putSession struct {
	m          *media
	name       string
	arn        string // the stream's: one created again under name has another
	log        *slog.Logger
	buf        *streamBuffer
	w          http.ResponseWriter
	rc         *http.ResponseController
	ctx        context.Context // cancelled with the fatal ackErr by fail
	cancel     context.CancelCauseFunc
	relative   bool
	startNanos int64 // producer start timestamp (RELATIVE)
	liveOnly   bool  // retention 0: nothing is stored (persister only)
	body       io.Reader

	// For metrics and events (metrics.go, events.go).
	ingest   *streamCounters
	received int64        // body bytes read (the handler's goroutine)
	done     atomic.Int64 // fragments PERSISTED, or published for a stream that keeps no data
	endErr   *ackErr      // the ERROR that ended the upload, if any (set by run)

	mu         sync.Mutex
	failure    *ackErr // first fatal error (delete, store, client gone)
	stopped    bool    // reading was cut off; deadlines are no longer extended
	finished   bool    // the handler is returning: rc must not be used any more
	lastExtend time.Time
	stalled    time.Duration // cutIfStalled ended the upload: it sent nothing for this long
	reading    atomic.Bool   // Read waits for the body
	lastRead   atomic.Int64  // when Read last got bytes (or the session started), Unix ns
	readErr    error         // first error of the body itself (not EOF)
	aborted    bool          // the parser gave up: Read fails at once
	draining   bool          // Server.Close: no new fragment (shutdown.go)
	fragOpen   bool          // the parser is inside a fragment (for drain)
	sawEOF     bool          // the body was read to its end

	ackMu   sync.Mutex
	ackBuf  []byte
	ackDead bool
	acked   bool // an ack other than IDLE went out since the last IDLE check
}

// fail records a fatal error, cancels the session and cuts off a pending body read.
func (p *putSession) fail(e *ackErr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// The upload's one ERROR names the earliest fragment that failed: a store failure found
	// after a later fragment's parse error (fragments are written and made durable behind the
	// parser) takes its place, or the producer, rolling back to the later one, would lose it.
	if p.failure == nil || e.Number != 0 && (p.failure.Number == 0 || e.Number < p.failure.Number) {
		p.failure = e
		p.log.Debug("put media failed", "err", e)
	}
	p.cancel(e)
	if !p.stopped && !p.finished {
		p.stopped = true
		_ = p.rc.SetReadDeadline(time.Now())
	}
}

// cutIfStalled implements holder (sequencer.go): another upload of the stream waits for this
// one's open fragment. If this one has been waiting for bytes inside it for d, with none arriving,
// its read is cut off, as by PutMediaReadTimeout: the fragment is abandoned (its number released)
// and the upload ends with ERROR 4000 naming it.
func (p *putSession) cutIfStalled(d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.fragOpen || !p.reading.Load() || p.stopped || p.finished || time.Since(time.Unix(0, p.lastRead.Load())) < d {
		return false
	}
	p.stopped, p.stalled = true, d
	_ = p.rc.SetReadDeadline(time.Now())
	p.log.Info("put media: cutting off an upload silent inside its fragment while another upload of the stream waits", "silent", d)
	return true
}

// Read reads the body, extending the read deadline (PutMediaReadTimeout) as data flows, and
// remembers the body's own errors so that they map to ERROR 4000 rather than 4006.
func (p *putSession) Read(b []byte) (int, error) {
	p.mu.Lock()
	if p.aborted {
		p.mu.Unlock()
		return 0, errReadAborted
	}
	if !p.stopped {
		if now := time.Now(); now.Sub(p.lastExtend) > p.m.readTimeout/8 {
			p.lastExtend = now
			_ = p.rc.SetReadDeadline(now.Add(p.m.readTimeout))
		}
	}
	p.mu.Unlock()
	p.reading.Store(true)
	n, err := p.body.Read(b)
	p.reading.Store(false)
	if n > 0 {
		p.lastRead.Store(time.Now().UnixNano())
		p.received += int64(n)
		p.ingest.bytes.Add(float64(n))
	}
	if err != nil {
		p.mu.Lock()
		if err == io.EOF { //nolint:errorlint // io.Reader contract: EOF is returned as is
			p.sawEOF = true
		} else if p.readErr == nil {
			p.readErr = err
		}
		p.mu.Unlock()
	}
	return n, err
}

// ack writes one ack as one Write and one Flush (producer parsers take one JSON object per
// chunk, at most 1024 bytes). A write error (the client is gone) fails the session.
func (p *putSession) ack(typ string, timecode *int64, number uint64, e *ackErr) {
	p.ackMu.Lock()
	defer p.ackMu.Unlock()
	if p.ackDead {
		return
	}
	ev := ackEvent{EventType: typ, FragmentTimecode: timecode}
	if number != 0 {
		ev.FragmentNumber = formatFragmentNumber(number)
	}
	if e != nil {
		ev.ErrorId, ev.ErrorCode = e.ID, e.Code
	}
	p.ackBuf = appendAck(p.ackBuf[:0], &ev)
	_ = p.rc.SetWriteDeadline(time.Now().Add(p.m.writeTimeout))
	_, err := p.w.Write(p.ackBuf)
	if err == nil {
		err = p.rc.Flush()
	}
	if typ != ackIdle {
		p.acked = true // an IDLE is not "another ack": the next one is due an interval later
	}
	if err != nil {
		p.ackDead = true
		p.fail(newAckErr(4000, "writing acks: %v", err)) // lock order: ackMu, then mu
	}
}

// idle sends IDLE acks while no other ack goes out, until done closes.
func (p *putSession) idle(done <-chan struct{}) {
	t := time.NewTicker(p.m.idleAckInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			p.ackMu.Lock()
			sent := p.acked
			p.acked = false
			p.ackMu.Unlock()
			if !sent {
				p.ack(ackIdle, nil, 0, nil)
			}
		}
	}
}

// run parses the body, hands fragments to the persister and ends with the ERROR ack if any.
func (p *putSession) run(body io.Reader) {
	p.body = body
	jobs := make(chan persistJob, 2) // two fragments may wait while the third is parsed
	persisted := make(chan struct{})
	go func() {
		defer close(persisted)
		p.persist(jobs)
	}()
	idleDone := make(chan struct{})
	idleExited := make(chan struct{})
	go func() {
		defer close(idleExited)
		p.idle(idleDone)
	}()

	ps := &putParser{p: p, jobs: jobs}
	perr := ps.parse()
	ps.release()
	close(jobs)
	<-persisted
	close(idleDone)
	<-idleExited

	p.mu.Lock()
	final := p.failure
	p.finished = true
	p.mu.Unlock()
	if final == nil && perr != nil {
		final = perr
	}
	if final != nil {
		p.endErr = final
		p.errorAck(final)
	}
}

// errorAck sends the ERROR ack for e, naming what e points at, and logs it once at warn: the
// reason is in no ack (they carry only ErrorId and ErrorCode), so the log is where an operator
// finds it.
func (p *putSession) errorAck(e *ackErr) {
	attrs := []any{"error_id", e.ID, "error_code", e.Code, "reason", e.Message}
	var tc *int64
	if e.HasTimecode {
		tc = &e.Timecode
		attrs = append(attrs, "fragment_timecode", e.Timecode)
	}
	if e.Number != 0 {
		attrs = append(attrs, "fragment_number", formatFragmentNumber(e.Number))
	}
	if e.Offset >= 0 {
		attrs = append(attrs, "body_offset", e.Offset)
	}
	p.log.Warn("put media: ERROR ack", attrs...)
	p.ack(ackError, tc, e.Number, e)
	p.m.s.metrics.errorAck(e.ID)
	ev := &Event{Type: EventUploadError, Stream: p.name, FragmentTimecode: tc, ErrorID: e.ID, ErrorCode: e.Code, Reason: e.Message}
	if e.Number != 0 {
		ev.FragmentNumber = formatFragmentNumber(e.Number)
	}
	p.m.s.events.publish(ev)
}
