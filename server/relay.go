package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// leaseWait bounds how long a PutMedia waits, before its answer, for a stream whose writer
// cannot be reached: until the writer's lease runs out (its TTL, 10 s by default) and this node
// takes the stream. A producer whose writer died reconnects here and goes on after that pause.
const leaseWait = 15 * time.Second

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
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, owner+"/putMedia", r.Body)
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
	resp, err := m.feedersClient().Do(req)
	if err != nil {
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
	br := bufio.NewReaderSize(resp.Body, 4096)
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
		case errors.Is(err, io.EOF) || r.Context().Err() != nil:
			return
		case err != nil:
			// The writer went away mid-upload: the producer's response is broken off, not ended,
			// so that it cannot take the end of the relay for the end of its upload (a clean end
			// says the server is done with it; acks may be missing here).
			log.Info("put media: relay broken off", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// feedersClient is the HTTP client for requests to other nodes.
func (m *media) feedersClient() *http.Client { return m.feeders.client }
