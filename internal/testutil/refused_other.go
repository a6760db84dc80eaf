//go:build !unix

package testutil

import "testing"

// RefusedAddr returns a loopback host:port where nothing listens: here, without a way to hold
// the port, a free one (see the unix version).
func RefusedAddr(t testing.TB) string { return FreeAddr(t) }
