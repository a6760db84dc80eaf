package backends

import (
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Link is a TCP relay from a loopback port to one of the test binary's servers. Cut makes that
// server unreachable through it, as a crashed server or a broken network does: new connections
// are refused and the open ones are reset. Only what was given the link's address sees the
// outage, so the outage tests run in parallel with the other tests on the same server (stopping
// the shared server made each of them hold up the rest of its package). Restore lets
// connections through again on the same address. Freeze makes the server silent instead, as a
// network partition that drops packets or a frozen VM does: nothing is refused or reset, but no
// byte gets through either way, on the open connections or on new ones, until Thaw.
type Link struct {
	target, addr string

	mu     sync.Mutex
	ln     net.Listener // nil while cut
	conns  map[net.Conn]struct{}
	frozen chan struct{} // non-nil while frozen; closed by Thaw
}

// Through returns rawURL (http://host:port/… or postgres://user@host:port/…) with its host and
// port replaced by those of a new Link to them. The link closes when the test ends.
func Through(t testing.TB, rawURL string) (string, *Link) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		t.Fatalf("backends.Through: %q is not a URL with a host", rawURL)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{target: u.Host, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	go l.serve(ln)
	t.Cleanup(l.cut)
	u.Host = l.addr
	return u.String(), l
}

// Cut refuses new connections and resets the open ones.
func (l *Link) Cut(t testing.TB) {
	t.Helper()
	l.cut()
}

// Restore accepts connections again, on the same address.
func (l *Link) Restore(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln, err = net.Listen("tcp", l.addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("restoring the link to %s: %v", l.target, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go l.serve(ln)
}

// Freeze stops passing bytes in both directions, on the open connections and on those accepted
// from now on, without closing any: their reads and writes wait, as on a silent network. The
// link closes its connections at the end of the test all the same.
func (l *Link) Freeze(t testing.TB) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.frozen == nil {
		l.frozen = make(chan struct{})
	}
}

// Thaw passes the bytes again, those held since Freeze first.
func (l *Link) Thaw(t testing.TB) {
	t.Helper()
	l.thaw()
}

func (l *Link) thaw() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.frozen != nil {
		close(l.frozen)
		l.frozen = nil
	}
}

// pass returns once bytes may go through (at once unless the link is frozen).
func (l *Link) pass() {
	l.mu.Lock()
	frozen := l.frozen
	l.mu.Unlock()
	if frozen != nil {
		<-frozen
	}
}

func (l *Link) cut() {
	l.thaw() // the relays held by a freeze end with their connections
	l.mu.Lock()
	ln, conns := l.ln, l.conns
	l.ln, l.conns = nil, map[net.Conn]struct{}{}
	l.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not an orderly close
		}
		c.Close()
	}
}

// track adds a relayed pair to the open connections, unless the link was cut since ln accepted
// the first.
func (l *Link) track(ln net.Listener, c, up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != ln {
		return false
	}
	l.conns[c], l.conns[up] = struct{}{}, struct{}{}
	return true
}

func (l *Link) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, say: try again shortly
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go l.relay(ln, c)
	}
}

func (l *Link) relay(ln net.Listener, c net.Conn) {
	up, err := net.DialTimeout("tcp", l.target, 10*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !l.track(ln, c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				l.pass()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				l.pass() // a frozen network carries no close either
				return
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done // either side ended: end both
	c.Close()
	up.Close()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, up)
	l.mu.Unlock()
}
