//go:build unix

package server

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/openkvs/kvs/internal/bufpool"
)

// connReadBuffer is the size of one read from a connection (Listener).
const connReadBuffer = 64 << 10

// Listener wraps ln so that every TCP connection it accepts is read in reads of up to 64 KiB
// into a pooled buffer, held only while it has unread bytes (never while the connection waits
// for data). net/http reads a connection through a 4 KiB buffer of its own: a PutMedia frame of a
// camera (one HTTP chunk of a few kilobytes, sent as it is captured) then took about four read
// syscalls, where it takes two through this one (the one that reads it and the one that finds
// the socket empty). Put it under TLS (tls.NewListener(server.Listener(ln), cfg)). Connections
// that are not *net.TCPConn are returned as they are.
func Listener(ln net.Listener) net.Listener { return bufListener{ln} }

type bufListener struct{ net.Listener }

func (l bufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil //nolint:nilerr // unbuffered then
	}
	return &bufConn{TCPConn: tc, raw: raw}, nil
}

// bufConn is a TCP connection read through a pooled buffer. Its other methods (Write, ReadFrom
// for sendfile, CloseWrite, deadlines, Close) are the TCPConn's. Unlike a net.Conn it is not
// safe for concurrent Reads (net/http reads a connection from one goroutine at a time). A buffer
// still holding bytes when the connection closes is left to the GC: Close may run during a Read.
type bufConn struct {
	*net.TCPConn
	raw syscall.RawConn
	buf []byte // unread bytes (a pooled buffer), nil when there are none
	off int
}

func (c *bufConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf != nil {
		n := copy(p, c.buf[c.off:])
		c.off += n
		if c.off == len(c.buf) {
			bufpool.Put(c.buf)
			c.buf, c.off = nil, 0
		}
		return n, nil
	}
	if len(p) >= connReadBuffer {
		return c.TCPConn.Read(p)
	}
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		b := bufpool.Get(connReadBuffer)
		b = b[:cap(b)]
		for {
			n, rerr = syscall.Read(int(fd), b)
			if !errors.Is(rerr, syscall.EINTR) {
				break
			}
		}
		if errors.Is(rerr, syscall.EAGAIN) {
			bufpool.Put(b)
			return false // wait until readable, holding no buffer
		}
		if n > 0 {
			c.buf = b[:n]
		} else {
			bufpool.Put(b)
		}
		return true
	})
	switch {
	case err != nil: // a deadline or a closed connection
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		return 0, io.EOF
	}
	return c.Read(p)
}

// WriteTo copies through Read, so that buffered bytes come first (TCPConn's own WriteTo would
// skip them).
func (c *bufConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}
