//go:build !unix

package server

import (
	"context"
	"net"
)

// Listener returns ln as it is here: the pooled-buffer reads of the unix version (conn_unix.go)
// wait for readability on the raw socket, which this platform's syscall package does not offer
// the same way; net/http's own 4 KiB reads serve.
func Listener(ln net.Listener) net.Listener { return ln }

// ConnContext returns ctx: connections here are not paced (conn_unix.go).
func ConnContext(ctx context.Context, _ net.Conn) context.Context { return ctx }

func connPaces(context.Context) bool { return false }
