package client

// A media answer meant for a file (GetMediaForFragmentListForFile) can skip user space at both
// ends: the kvs server sends stored fragments with sendfile(2) when the request asks for it
// (HeaderSendfile), and MediaBody.WriteToFile splices the socket into the file. The splice needs
// the TCP connection itself, which net/http's client does not hand out, so such a request is a
// plain HTTP/1.1 exchange of the client's own on a connection it keeps for the next one
// (rawExchange). The server sends with sendfile only to readers that ask: on loopback a reader
// that copies was slower from sendfile's buffers (a raw-TCP experiment outside this repository,
// session 18's note on issue #17). What both ends together gain, scripts/perf-ab.sh measures
// (get-fragments -o FILE; README, Performance II).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// HeaderSendfile is the request header with which a GetMediaForFragmentList caller that moves
// the answer into a file without reading it asks a kvs server to send stored fragments with
// sendfile(2). Other servers ignore it.
const HeaderSendfile = "X-Kvs-Sendfile"

// MediaBody is the streaming body of a media answer. Length is its Content-Length, -1 when the
// server gave none. Read it, or move it into a file with WriteToFile; then Close it.
type MediaBody struct {
	Length int64

	r io.ReadCloser // the body, when it came through net/http

	// A body of a rawExchange: head (the bytes read with the headers), then rest bytes from conn,
	// until ctx (the request's) is done.
	ctx  context.Context
	x    *rawExchange
	addr string // what conn was dialled to: its key among the idle ones
	conn net.Conn
	head []byte
	rest int64
	stop func() bool // stops the cancellation of conn with the request's context
}

// Read reads the body.
func (b *MediaBody) Read(p []byte) (int, error) {
	if b.r != nil {
		return b.r.Read(p)
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.rest == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.rest {
		p = p[:b.rest]
	}
	n, err := b.conn.Read(p)
	b.rest -= int64(n)
	if errors.Is(err, io.EOF) && b.rest > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, b.ctxErr(err)
}

// ctxErr is err, or the context's error when the context ended the body (by closing the
// connection).
func (b *MediaBody) ctxErr(err error) error {
	if err != nil && b.ctx.Err() != nil {
		return b.ctx.Err()
	}
	return err
}

// WriteToFile writes the rest of the body to f at off, through f's file offset (so f must be
// no other writer's at the same time), and returns how many bytes it wrote. A body of
// GetMediaForFragmentListForFile goes from the socket to the file by splice(2) on Linux, never
// through user space; any other is copied.
func (b *MediaBody) WriteToFile(f *os.File, off int64) (int64, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	if b.r != nil {
		return io.Copy(f, b.r)
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := f.Write(b.head)
	b.head = b.head[n:]
	if err != nil {
		return int64(n), err
	}
	// *net.TCPConn under a LimitedReader is what (*os.File).ReadFrom splices from.
	lr := &io.LimitedReader{R: b.conn, N: b.rest}
	m, err := f.ReadFrom(lr)
	b.rest = lr.N
	if err == nil && b.rest > 0 {
		err = io.ErrUnexpectedEOF
	}
	return int64(n) + m, b.ctxErr(err)
}

// Close ends the body; a raw exchange's connection read to the end of its answer serves the next.
func (b *MediaBody) Close() error {
	if b.r != nil {
		return b.r.Close()
	}
	if b.conn == nil {
		return nil
	}
	reuse := b.stop() && len(b.head) == 0 && b.rest == 0
	if reuse {
		b.x.put(b.addr, b.conn)
	} else {
		b.conn.Close()
	}
	b.conn = nil
	return nil
}

// rawExchange makes HTTP/1.1 requests on TCP connections of its own, keeping idle ones for the
// next request to the same address.
type rawExchange struct {
	mu   sync.Mutex
	idle map[string][]net.Conn
}

// maxIdleRaw is how many idle connections a rawExchange keeps per address: get-fragments has up
// to 64 requests in flight.
const maxIdleRaw = 64

// get returns an idle connection to addr (reused true) or a new one.
func (x *rawExchange) get(ctx context.Context, addr string) (c net.Conn, reused bool, err error) {
	x.mu.Lock()
	if conns := x.idle[addr]; len(conns) > 0 {
		c = conns[len(conns)-1]
		x.idle[addr] = conns[:len(conns)-1]
		x.mu.Unlock()
		return c, true, nil
	}
	x.mu.Unlock()
	var d net.Dialer
	c, err = d.DialContext(ctx, "tcp", addr)
	return c, false, err
}

// put keeps c, a connection to addr (as get was given it: the URL's host, not c's remote
// address, which differs when the URL names its host), for the next request to addr.
func (x *rawExchange) put(addr string, c net.Conn) {
	_ = c.SetDeadline(time.Time{})
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idle == nil {
		x.idle = map[string][]net.Conn{}
	}
	if len(x.idle[addr]) >= maxIdleRaw {
		c.Close()
		return
	}
	x.idle[addr] = append(x.idle[addr], c)
}

// closeIdle closes the idle connections.
func (x *rawExchange) closeIdle() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, conns := range x.idle {
		for _, c := range conns {
			c.Close()
		}
	}
	x.idle = nil
}

// rawUsable says whether req can go on a raw exchange: plain HTTP with no proxy, from a client
// that carries its requests with its own HTTP client (Config.HTTPClient unset: one set by the
// caller may do what a raw exchange would skip).
func (c *Client) rawUsable(req *http.Request) bool {
	if c.httpClient != nil || req.URL.Scheme != "http" {
		return false
	}
	proxy, err := http.ProxyFromEnvironment(req)
	return err == nil && proxy == nil
}

// doRaw sends req (whose body is body) on a connection of c's raw exchange and reads the answer's
// headers. A 2xx answer with a Content-Length is a MediaBody over the connection; any other is
// an *http.Response as c.do gives, its body read through the connection, which is not reused.
// When a connection kept idle fails before an answer (the server closed it meanwhile), the
// request goes once more on a new one, as net/http's transport does.
func (c *Client) doRaw(req *http.Request, body []byte) (*MediaBody, *http.Response, error) {
	host := req.URL.Host
	if req.URL.Port() == "" {
		host = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for {
		conn, reused, err := c.raw.get(req.Context(), host)
		if err != nil {
			return nil, nil, err
		}
		mb, resp, err := c.exchange(host, conn, req, body)
		if err != nil && reused && req.Context().Err() == nil {
			continue
		}
		return mb, resp, err
	}
}

// exchange writes req on conn, dialled to addr, and reads the answer's headers.
func (c *Client) exchange(addr string, conn net.Conn, req *http.Request, body []byte) (*MediaBody, *http.Response, error) {
	// The context's end closes the connection, as net/http's transport does for the other path
	// (a deadline alone left it open, and the server writing to it, until the caller's Close).
	// Close reuses the connection only when this did not run.
	stop := context.AfterFunc(req.Context(), func() { conn.Close() })
	fail := func(err error) (*MediaBody, *http.Response, error) {
		stop()
		conn.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, ctxErr
		}
		return nil, nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	c.observeDate(resp)
	if resp.StatusCode/100 != 2 || resp.ContentLength < 0 || resp.Close || resp.ContentLength < int64(br.Buffered()) {
		// Read through net/http's reader; the connection goes with the body.
		resp.Body = &closeWith{ReadCloser: resp.Body, close: func() { stop(); conn.Close() }}
		return nil, resp, nil
	}
	head := make([]byte, br.Buffered())
	_, _ = io.ReadFull(br, head)
	return &MediaBody{Length: resp.ContentLength, ctx: req.Context(), x: &c.raw, addr: addr, conn: conn, head: head,
		rest: resp.ContentLength - int64(len(head)), stop: stop}, nil, nil
}

// closeWith is a body whose Close also runs close.
type closeWith struct {
	io.ReadCloser
	close func()
}

func (c *closeWith) Close() error {
	err := c.ReadCloser.Close()
	c.close()
	return err
}

// CloseIdleConnections closes the connections GetMediaForFragmentListForFile keeps for its next
// requests (those of the HTTP client are its own to close).
func (c *Client) CloseIdleConnections() { c.raw.closeIdle() }
