//go:build unix

package testutil

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback host:port where a connection is refused for the whole test: a
// socket bound to it and never listening holds the port, so that no other test or process of a
// busy machine can start listening there (an address from FreeAddr may be taken by the time it
// is dialled).
func RefusedAddr(t testing.TB) string { return HoldPort(t).Addr() }

// PortHold holds a loopback TCP port with a socket that is bound and never listens: connections
// to it are refused, and no other socket (a listener, or a connect(2) picking a local port) gets
// it. A test server that goes down and comes back on the same address holds its port while
// down, and releases it just before it listens again.
type PortHold struct {
	t    testing.TB
	port int
	fd   int // -1 while released
}

// HoldPort holds a free loopback port until the test ends.
func HoldPort(t testing.TB) *PortHold {
	t.Helper()
	h := &PortHold{t: t, fd: -1}
	h.bind()
	sa, err := syscall.Getsockname(h.fd)
	if err != nil {
		t.Fatal(err)
	}
	h.port = sa.(*syscall.SockaddrInet4).Port
	t.Cleanup(h.Release)
	return h
}

// Addr is the held address, host:port.
func (h *PortHold) Addr() string { return fmt.Sprintf("127.0.0.1:%d", h.port) }

// Release frees the port, to listen on it at once.
func (h *PortHold) Release() {
	if h.fd >= 0 {
		syscall.Close(h.fd)
		h.fd = -1
	}
}

// Hold binds the port again after Release (a no-op while held).
func (h *PortHold) Hold() {
	h.t.Helper()
	if h.fd < 0 {
		h.bind()
	}
}

// bind binds port h.port (0 at first: a free one). SO_REUSEADDR, as net.Listen sets it, lets it
// bind beside the closed server's connections in TIME_WAIT.
func (h *PortHold) bind() {
	// SOCK_CLOEXEC is not on every unix (macOS): close-on-exec set under ForkLock, as package
	// net does there, so that no child started meanwhile inherits the socket.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		h.t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: h.port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		h.t.Fatalf("holding port %d: %v", h.port, err)
	}
	h.fd = fd
}
