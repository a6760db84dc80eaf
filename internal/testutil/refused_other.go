//go:build !unix

package testutil

import "testing"

// RefusedAddr returns a loopback host:port where nothing listens: here, without a way to hold
// the port, a free one (see the unix version).
func RefusedAddr(t testing.TB) string { return FreeAddr(t) }

// PortHold, here, only names a free port (see the unix version): nothing holds it.
type PortHold struct{ addr string }

// HoldPort returns a free loopback port.
func HoldPort(t testing.TB) *PortHold { return &PortHold{addr: FreeAddr(t)} }

// Addr is the address, host:port.
func (h *PortHold) Addr() string { return h.addr }

// Release does nothing here.
func (h *PortHold) Release() {}

// Hold does nothing here.
func (h *PortHold) Hold() {}
