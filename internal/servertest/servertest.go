// Package servertest starts kvs servers for the tests of the packages that talk to one (client,
// cmd, internal/bench) as `kvs server` runs them: the FS store in a temporary directory, on
// server.Listener with server.ConnContext (paced connections that send stored payloads with
// sendfile when asked). The server package's own tests build theirs from its internals.
package servertest

import (
	"net"
	"net/http/httptest"
	"testing"

	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// Start starts a kvs server as `kvs server` runs it, with lis around its listener (nil: none),
// and returns its URL. It stops, and its store closes, when the test ends.
func Start(t testing.TB, lis func(net.Listener) net.Listener) string {
	t.Helper()
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = server.Listener(ts.Listener)
	if lis != nil {
		ts.Listener = lis(ts.Listener)
	}
	ts.Config.ConnContext = server.ConnContext
	ts.Config.MaxHeaderBytes = server.MaxHeaderBytes
	ts.Start()
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	return ts.URL
}
