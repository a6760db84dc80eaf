//go:build unix

package testutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// HoldPort holds a free loopback port until the test ends. The port is below the kernel's
// range of ephemeral ports where it can tell that range (Linux): a port from that range, free
// while held, could be given to any connect(2) or listen on port 0 of the machine in the moment
// between Release and the server's listen (a test's kvs server, on its first start, once found
// its port taken so).
func HoldPort(t testing.TB) *PortHold {
	t.Helper()
	h := &PortHold{t: t, fd: -1}
	if lo := ephemeralLow(); lo > 2048 {
		for range 100 {
			h.port = 1024 + rand.IntN(lo-1024)
			if h.tryBind(false) == nil {
				break
			}
			h.port = 0
		}
	}
	if h.fd < 0 {
		h.bind()
	}
	sa, err := syscall.Getsockname(h.fd)
	if err != nil {
		t.Fatal(err)
	}
	h.port = sa.(*syscall.SockaddrInet4).Port
	t.Cleanup(h.Release)
	return h
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 0 when it is not known.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
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

// bind binds port h.port (0: a free one) with SO_REUSEADDR, or fails the test. A bind that meets
// EADDRINUSE is tried again for up to 2 s: once, in a full run of the suite, holding a port
// again right after its server had closed failed so (TestProducerSpoolOutage), which no other
// socket of the run could be seen to hold.
func (h *PortHold) bind() {
	err := h.tryBind(true)
	for end := time.Now().Add(2 * time.Second); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
		err = h.tryBind(true)
	}
	if err != nil {
		h.t.Fatalf("holding port %d: %v", h.port, err)
	}
}

// tryBind binds port h.port (0: a free one). With reuse, SO_REUSEADDR, as net.Listen sets it,
// lets it bind beside the closed server's connections in TIME_WAIT; without, the bind fails while
// any other socket has the port (Linux lets two bound sockets that do not listen share a port
// when both set SO_REUSEADDR: two tests could pick the same one).
func (h *PortHold) tryBind(reuse bool) error {
	// SOCK_CLOEXEC is not on every unix (macOS): close-on-exec set under ForkLock, as package
	// net does there, so that no child started meanwhile inherits the socket.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return err
	}
	if reuse {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			syscall.Close(fd)
			return err
		}
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: h.port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return err
	}
	h.fd = fd
	return nil
}
