//go:build unix

package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

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
//
// A write deadline on its connections is a pace (bufConn.SetWriteDeadline): an http.Server
// WriteTimeout there limits how long 64 KiB may take, not the whole response.
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

// bufConn is a TCP connection read through a pooled buffer, whose write deadline is a pace (see
// SetWriteDeadline), and to which ReadFrom sends file sections with sendfile(2) under that pace.
// Its other methods (CloseWrite, read deadlines, Close) are the TCPConn's. Unlike a net.Conn it is not safe for concurrent Reads or concurrent Writes
// (net/http reads a connection from one goroutine at a time, and writes it from one). A buffer
// still holding bytes when the connection closes is left to the GC: Close may run during a Read.
type bufConn struct {
	*net.TCPConn
	raw syscall.RawConn
	buf []byte // unread bytes (a pooled buffer), nil when there are none
	off int

	pace atomic.Int64 // the write timeout as a duration (SetWriteDeadline), 0 for none
	sent int          // bytes written since the deadline was last moved on
}

// sentByFile counts the bytes bufConn sent with sendfile(2), for tests.
var sentByFile atomic.Int64

// paceQuantum is how much a paced Write must get into the socket within the write timeout.
const paceQuantum = 64 << 10

// SetWriteDeadline sets the write deadline t, and makes it a pace: t is taken as now plus a
// timeout, and every 64 KiB that a Write gets into the socket moves the deadline on to the time
// then plus that timeout. So a Write of any size fails only when the peer stops reading (or reads
// less than 64 KiB within the timeout), and net/http can be given a media chunk of megabytes in
// one Write. kvs sets every write deadline as now plus a timeout (pacedWriter, the PutMedia acks),
// so nothing else changes meaning. The zero t clears it.
func (c *bufConn) SetWriteDeadline(t time.Time) error {
	var pace time.Duration
	if !t.IsZero() {
		pace = max(time.Until(t), 1) // a deadline in the past still fails the next Write
	}
	c.pace.Store(int64(pace))
	return c.TCPConn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines, the write one as SetWriteDeadline does.
func (c *bufConn) SetDeadline(t time.Time) error {
	if err := c.TCPConn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// sentOne moves the deadline on once paceQuantum bytes are written since it last moved, m
// bytes having just been written (SetWriteDeadline).
func (c *bufConn) sentOne(m int) {
	if c.sent += m; c.sent >= paceQuantum {
		c.sent = 0
		// The pace as it is now: another goroutine may have cleared or changed it.
		if pace := time.Duration(c.pace.Load()); pace > 0 {
			_ = c.TCPConn.SetWriteDeadline(time.Now().Add(pace))
		}
	}
}

// writeError says err, an error of a paced write (or sendfile: op), as TCPConn.Write says it.
func (c *bufConn) writeError(op string, err, werr error) error {
	var oe *net.OpError
	switch {
	case errors.As(err, &oe): // the deadline, or a closed connection
		oe.Op = "write"
		return oe
	case err != nil:
		return err
	case werr != nil:
		return &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, werr)}
	}
	return nil
}

// ReadFrom writes what r holds. A section of a file (an *io.SectionReader over an *os.File: a
// stored payload, store.FS.Open) goes from the page cache to the socket with sendfile(2) where
// the system has it, paced as Write is. Anything else goes through Write when the connection
// paces (TCPConn's own ReadFrom would send it under one deadline for the whole), else to
// TCPConn's ReadFrom as before.
func (c *bufConn) ReadFrom(r io.Reader) (int64, error) {
	if sr, ok := r.(*io.SectionReader); ok {
		if n, handled, err := c.sendSection(sr); handled {
			return n, err
		}
	}
	if c.pace.Load() <= 0 {
		return c.TCPConn.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// sendSection sends the rest of sr with sendfile(2), when sr is a section of an *os.File and
// the system has sendfile (handled).
func (c *bufConn) sendSection(sr *io.SectionReader) (n int64, handled bool, err error) {
	ra, base, size := sr.Outer()
	f, ok := ra.(*os.File)
	if !ok || !haveSendfile {
		return 0, false, nil
	}
	pos, err := sr.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, false, nil //nolint:nilerr // a section can always tell where it is
	}
	src, err := f.SyscallConn()
	if err != nil {
		return 0, false, nil //nolint:nilerr // not a file sendfile can read: copied instead
	}
	off, left := base+pos, size-pos
	var werr error
	cerr := src.Control(func(sfd uintptr) {
		err = c.raw.Write(func(fd uintptr) bool {
			for left > 0 {
				m, err := sendfile(int(fd), int(sfd), &off, int(min(left, 1<<30)))
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					if m <= 0 {
						return false // wait until writable, or the deadline
					}
				case err != nil:
					werr = err
					return true
				case m == 0: // the file ends before the section does
					werr = io.ErrUnexpectedEOF
					return true
				}
				n += int64(m)
				left -= int64(m)
				sentByFile.Add(int64(m))
				if time.Duration(c.pace.Load()) > 0 {
					c.sentOne(m)
				}
			}
			return true
		})
	})
	if _, serr := sr.Seek(pos+n, io.SeekStart); cerr == nil {
		cerr = serr
	}
	if err := c.writeError("sendfile", err, werr); err != nil {
		return n, true, err
	}
	return n, true, cerr
}

// Write writes p. Under a pace it writes as much as the socket takes in each write(2) and moves
// the deadline on after every paceQuantum bytes written (SetWriteDeadline).
func (c *bufConn) Write(p []byte) (int, error) {
	pace := time.Duration(c.pace.Load())
	if pace <= 0 {
		return c.TCPConn.Write(p)
	}
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, err := syscall.Write(int(fd), p[n:])
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return false // wait until writable, or the deadline
			case err != nil:
				werr = err
				return true
			}
			n += m
			c.sentOne(m)
		}
		return true
	})
	return n, c.writeError("write", err, werr)
}

type pacedConnKey struct{}

// ConnContext marks the context of a connection of Listener (also under TLS) as one whose
// write deadline is a pace, so that media answers hand net/http whole chunks (pacedWriter). Set
// it as the http.Server's ConnContext; without it every connection is treated as unpaced.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if _, ok := c.(*bufConn); ok {
		return context.WithValue(ctx, pacedConnKey{}, true)
	}
	return ctx
}

// connPaces says whether the request's connection paces its writes (ConnContext).
func connPaces(ctx context.Context) bool {
	paced, _ := ctx.Value(pacedConnKey{}).(bool)
	return paced
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
