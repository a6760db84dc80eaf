package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// leaseWait bounds how long a PutMedia waits, before its answer, for a stream whose writer
// cannot be reached: until the writer's lease runs out (its TTL, 10 s by default) and this node
// takes the stream. A producer whose writer died reconnects here and goes on after that pause.
const leaseWait = 15 * time.Second

// A relayed PutMedia gives up a writer that goes silent (a partition, a firewall that dropped
// the flow, a frozen proxy or VM: no byte through and no reset), rather than wait until TCP gives
// up, many minutes later, with its producer getting no ack and no error all that time:
//   - its answer must begin within relayAnswerWait: the writer answers once it has looked the
//     stream up and checked its lease, two backend calls that give up after UnavailableWait
//     (10 s) each;
//   - after that, the writer sends an ack at least every IdleAckInterval (IDLE when nothing
//     else), so relaySilenceAcks of them without a byte (15 s by default, less than a producer's
//     own staleness check: 30 s for kvs put-media) means the link is dead. The producer's answer
//     is then broken off, and it reconnects, through GetDataEndpoint to the writer itself.
const (
	relayAnswerWait  = 25 * time.Second
	relaySilenceAcks = 5
)

// acquire makes this node the writer of stream for an upload, or returns the writer's URL to
// relay it to. When that writer does not answer, it waits for its lease to run out (leaseWait)
// and takes the stream then. A relayed request is never relayed again.
func (m *media) acquire(ctx context.Context, name string, relayed bool) (string, error) {
	c := m.s.cfg.Cluster
	deadline := time.Now().Add(leaseWait)
	for {
		owner, err := c.Acquire(ctx, name)
		switch {
		case err != nil:
			return "", err
		case owner == "":
			if m.feeders != nil {
				m.feeders.writing(name)
			}
			return "", nil
		case relayed:
			return "", store.ErrNotOwner // the writer moved since the relaying node looked
		case reachable(ctx, owner):
			return owner, nil
		case time.Now().After(deadline):
			return "", store.ErrNotOwner
		}
		m.s.log.Info("put media: the stream's writer does not answer; waiting for its lease", "stream", name, "writer", owner)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// reachable reports whether something listens at node's address (a TCP connection within 1 s).
func reachable(ctx context.Context, node string) bool {
	u, err := url.Parse(node)
	if err != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// relayedHeaders are the request headers a relayed PutMedia carries on: the KVS ones and the
// content type. Authentication is the relaying node's own (signRelay).
func relayedHeader(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "x-amzn-") && n != "x-amzn-requestid" || n == "content-type"
}

// relayPut relays a PutMedia upload to the node that writes its stream: the body is streamed
// there as it arrives, and the answer back, each ack in its own write and flush (producers
// parse one ack per chunk), so that the producer sees the writer's acks as if it were
// connected to it. If the writer goes away mid-upload, the answer ends and the producer
// reconnects.
func (m *media) relayPut(w http.ResponseWriter, r *http.Request, owner string) {
	s := m.s
	log := s.log.With("stream", r.Header.Get(hdrStreamName), "writer", owner, "request_id", requestID(r))
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	ctx, cancel := context.WithCancel(r.Context()) // cancelled when the writer is silent too long
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, owner+"/putMedia", r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for k, v := range r.Header {
		if relayedHeader(k) {
			req.Header[k] = v
		}
	}
	req.Header.Set(hdrRelayedBy, s.cfg.AdvertiseURL)
	req.ContentLength = -1 // chunked, as producers send it
	if err := s.signRelay(r.Context(), req, nil); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.metrics.relayedUploads.Inc()
	watch := watchRelay(m.relayAnswerWait, cancel, rc)
	defer watch.end()
	resp, err := m.feedersClient().Do(req)
	watch.t.Stop()
	if err != nil {
		if watch.fired() {
			err = fmt.Errorf("no answer within %v", m.relayAnswerWait)
		}
		log.Warn("put media: relay to the stream's writer failed", "err", err)
		s.writeError(w, r, &APIError{Code: codeInternalFailure, Status: http.StatusBadGateway,
			Message: "The node that writes this stream did not answer; try again."})
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		if k != "Content-Length" && k != "Transfer-Encoding" && !strings.EqualFold(k, "x-amzn-RequestId") {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	_ = rc.Flush()
	silent := time.Duration(relaySilenceAcks) * m.idleAckInterval
	br := bufio.NewReaderSize(silenceReader{resp.Body, watch.t, silent}, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(m.writeTimeout))
			if _, werr := w.Write(line); werr != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue // a line longer than the buffer (not an ack): passed on in pieces
		case errors.Is(err, io.EOF) || r.Context().Err() != nil && !watch.fired():
			return
		case err != nil:
			// The writer went away mid-upload: the producer's response is broken off, not ended,
			// so that it cannot take the end of the relay for the end of its upload (a clean end
			// says the server is done with it; acks may be missing here).
			if watch.fired() {
				err = fmt.Errorf("the writer sent nothing for %v", silent)
			}
			log.Info("put media: relay broken off", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// relayWatch gives a relayed PutMedia up when its timer t fires: it cancels the relay's request,
// and ends a read of the producer's body that the request's transport may be waiting in (a
// producer that sends nothing yet), since Do returns only after it. Not once the handler is
// over (end): the producer's connection may serve another request by then.
type relayWatch struct {
	t              *time.Timer
	mu             sync.Mutex
	over, silenced bool
}

func watchRelay(d time.Duration, cancel context.CancelFunc, rc *http.ResponseController) *relayWatch {
	rw := &relayWatch{}
	rw.t = time.AfterFunc(d, func() {
		rw.mu.Lock()
		defer rw.mu.Unlock()
		if !rw.over {
			rw.silenced = true
			cancel()
			_ = rc.SetReadDeadline(time.Now())
		}
	})
	return rw
}

// fired reports whether the relay was given up for the writer's silence.
func (rw *relayWatch) fired() bool {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.silenced
}

func (rw *relayWatch) end() {
	rw.t.Stop()
	rw.mu.Lock()
	rw.over = true
	rw.mu.Unlock()
}

// silenceReader cancels (t's function) a Read that waits more than d for a byte: between Reads
// (while the relay writes an ack to the producer) t is stopped.
type silenceReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s silenceReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	n, err := s.r.Read(p)
	s.t.Stop()
	return n, err
}

// feedersClient is the HTTP client for requests to other nodes.
func (m *media) feedersClient() *http.Client { return m.feeders.client }
