//go:build unix

package server

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// A client that sends request after request on one connection (HTTP/1.1 pipelining) and never
// reads the answers is dropped once the server's writes have waited MediaWriteTimeout (1 s here),
// whatever the answers are: the KVS error answers, the health checks and the console's files as
// well as the JSON results and the media. The connection was kept for good before, its goroutine
// and buffers (about 200 kB a connection on kvs server's 64 KiB reads) blocked in a write that no
// timeout ended: ReadHeaderTimeout and IdleTimeout do not apply to a connection that is writing,
// and TCP keepalive does not end a peer that acknowledges with a zero window. The server runs as
// kvs server runs it, on Listener with ConnContext, with a small send buffer so that a client
// that reads nothing blocks its writes after a few kilobytes.
func TestPipelinedAnswersNeverRead(t *testing.T) {
	t.Parallel()
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// An answer whose request body the handler left unread is cut after both timeouts: net/http
	// reads what is left of the body before the headers go (newAnswerRecorder).
	srv, err := New(Config{Store: fs, MediaWriteTimeout: time.Second, RequestReadTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	closed := map[string]bool{} // the client's address of each connection the server closed
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(smallBufferListener{ts.Listener})
	ts.Config.ConnContext = ConnContext
	ts.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			mu.Lock()
			closed[c.RemoteAddr().String()] = true
			mu.Unlock()
		}
	}
	ts.Start()
	t.Cleanup(func() { ts.Close(); srv.Close(); fs.Close() })

	for _, tc := range []struct{ name, req string }{
		{"InvalidArgumentException", "POST /describeStream HTTP/1.1\r\nHost: kvs\r\nContent-Length: 2\r\n\r\n{}"},
		{"ResourceNotFoundException", "POST /describeStream HTTP/1.1\r\nHost: kvs\r\nContent-Length: 21\r\n\r\n{\"StreamName\":\"nope\"}"},
		{"an unknown operation", "POST /nothingHere HTTP/1.1\r\nHost: kvs\r\nContent-Length: 2\r\n\r\n{}"},
		{"GET /healthz", "GET /healthz HTTP/1.1\r\nHost: kvs\r\n\r\n"},
		{"the console", "GET /style.css HTTP/1.1\r\nHost: kvs\r\n\r\n"},
		{"a JSON result (set its own deadline before)", "POST /listStreams HTTP/1.1\r\nHost: kvs\r\nContent-Length: 2\r\n\r\n{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
			// Far more requests than the answers the buffers hold: the server is left writing.
			// The writes block once it stops reading, and fail once it drops the connection.
			go func() {
				batch := []byte(strings.Repeat(tc.req, 100))
				for range 200 {
					if _, err := c.Write(batch); err != nil {
						return
					}
				}
			}()
			waitFor(t, "the server drops the connection", 10*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return closed[c.LocalAddr().String()]
			})
		})
	}
}
