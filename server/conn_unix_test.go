//go:build unix

package server

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestListenerReads checks that a connection read through Listener's buffer gives the bytes
// sent, in order, whatever the read sizes, then io.EOF; and that a read deadline still applies.
func TestListenerReads(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(inner)
	defer ln.Close()
	want := make([]byte, 300_000)
	for i := range want {
		want[i] = byte(i * 31)
	}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for b := want; len(b) > 0; {
			n := min(len(b), 1+len(b)%7000)
			if _, err := c.Write(b[:n]); err != nil {
				t.Error(err)
				return
			}
			b = b[n:]
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*bufConn); !ok {
		t.Fatalf("accepted %T, want *bufConn", c)
	}
	var got []byte
	sizes := []int{1, 4096, 100, 70_000, 3}
	buf := make([]byte, 70_000)
	for i := 0; ; i++ {
		n, err := c.Read(buf[:sizes[i%len(sizes)]])
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d sent", len(got), len(want))
	}

	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			time.Sleep(time.Second) // sends nothing
			c.Close()
		}
	}()
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c2.Read(buf[:10]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
}

// TestListenerHTTP runs an HTTP server on Listener: requests with bodies, and a keep-alive
// connection that carries several.
func TestListenerHTTP(t *testing.T) {
	t.Parallel()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	ts.Listener = Listener(ts.Listener)
	ts.Start()
	defer ts.Close()
	for i := range 5 {
		body := strings.Repeat("kvs", 1+i*20_000)
		resp, err := ts.Client().Post(ts.URL, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != body {
			t.Fatalf("request %d: %d bytes back, %v", i, len(got), err)
		}
	}
}
