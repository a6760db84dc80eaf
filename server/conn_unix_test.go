//go:build unix

package server

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
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

// sndbufListener gives every connection it accepts a 16 KiB socket send buffer (no autotuning),
// so that a server Write blocks as soon as the reader falls behind, as over a slow link.
type sndbufListener struct{ net.Listener }

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}

// dialSlow dials addr with a 16 KiB socket receive buffer.
func dialSlow(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		return cmp.Or(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readSlowly reads n bytes from r, at most 16 KiB every 10 ms (under 1.6 MB/s), into a new slice.
func readSlowly(r io.Reader, n int) ([]byte, error) {
	got := make([]byte, n)
	for off := 0; off < n; {
		k, err := r.Read(got[off:min(n, off+16<<10)])
		off += k
		if err != nil {
			return got[:off], err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return got, nil
}

// TestListenerPacedWrite checks that on a connection of Listener a write deadline is a pace: a
// Write of 4 MiB to a reader that takes about 2.6 s for it succeeds under a 1 s deadline, since
// every 64 KiB goes in time, and one to a reader that stops reading fails at its deadline.
func TestListenerPacedWrite(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(sndbufListener{inner})
	defer ln.Close()
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for _, reads := range []bool{true, false} {
		client := dialSlow(t, ln.Addr().String())
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			n   int
			err error
		}
		wrote := make(chan result, 1)
		go func() {
			_ = sc.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := sc.Write(want)
			sc.Close() // the reader sees the end of what was written
			wrote <- result{n, err}
		}()
		if !reads {
			r := <-wrote
			if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.n >= len(want) {
				t.Errorf("to a reader that reads nothing: wrote %d of %d bytes, error %v; want the deadline", r.n, len(want), r.err)
			}
			continue
		}
		got, err := readSlowly(client, len(want))
		r := <-wrote
		if r.err != nil || r.n != len(want) {
			t.Fatalf("to a slow reader: wrote %d of %d bytes, error %v; want all of it", r.n, len(want), r.err)
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the reader got %d bytes (%v), not the ones written", len(got), err)
		}
	}
}

// pacedServer starts a server as kvs server runs one (Listener with 16 KiB socket send buffers,
// ConnContext), with a 1 s MediaWriteTimeout and stream cam holding payload as its fragment n;
// with h2, over TLS with HTTP/2. The test's cleanup stops it.
func pacedServer(t *testing.T, payload []byte, h2 bool) (ts *httptest.Server, n uint64) {
	t.Helper()
	return pacedServerStore(t, store.NewMem(), payload, h2)
}

// pacedServerStore is pacedServer on st.
func pacedServerStore(t *testing.T, st store.Store, payload []byte, h2 bool) (ts *httptest.Server, n uint64) {
	t.Helper()
	n = storeLargeFragment(t, st, "cam", payload)
	srv, err := New(Config{Store: st, MediaWriteTimeout: time.Second, RetentionInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts = httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(sndbufListener{ts.Listener})
	ts.Config.ConnContext = ConnContext
	if h2 {
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Close()
		_ = st.Close()
	})
	return ts, n
}

// TestPacedConnGetsWholeChunk checks the media answers on a kvs server's connections (Listener
// and ConnContext, as kvs server sets them): a stored 4 MiB fragment of GetMedia goes to net/http
// in Writes of streamPiece (1 MiB), so it travels in HTTP chunks that large, and a reader that
// takes about 2.6 s for it is not cut by a 1 s MediaWriteTimeout. (Elsewhere the chunk is written
// in 64 KiB HTTP chunks, each under its own deadline: TestSlowReaderGetsLargeChunks.)
func TestPacedConnGetsWholeChunk(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("kvs!"), 1<<20)
	ts, _ := pacedServer(t, payload, false)

	c := dialSlow(t, ts.Listener.Addr().String())
	body := `{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`
	fmt.Fprintf(c, "POST /getMedia HTTP/1.1\r\nHost: kvs\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	br := bufio.NewReaderSize(c, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("status %d, transfer encoding %v: want 200, chunked", resp.StatusCode, resp.TransferEncoding)
	}
	// The body as sent: chunk-size lines, each followed by its bytes (resp.Body would dechunk
	// it), up to the tags after the stored fragment (GetMedia then waits for the next).
	var sizes []int64
	var got []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d chunks %v: %v", len(sizes), sizes, err)
		}
		size, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
		if err != nil || size == 0 || size > 16<<20 {
			t.Fatalf("chunk size line %q", line)
		}
		b, err := readSlowly(br, int(size)+2) // and its CRLF
		if err != nil {
			t.Fatalf("chunk %d (%d bytes): read %d: %v", len(sizes), size, len(b), err)
		}
		sizes = append(sizes, size)
		got = append(got, b[:size]...)
		if at := bytes.Index(got, payload); at >= 0 && bytes.Contains(got[at+len(payload):], []byte(mkv.TagContinuationToken)) {
			break
		}
	}
	if big := slices.Max(sizes); big != streamPiece || len(sizes) > len(payload)/streamPiece+2 {
		t.Errorf("HTTP chunks %v: want the fragment's chunk (over %d bytes) in pieces of %d", sizes, len(payload), streamPiece)
	}
}

// TestPacedSendfileSlowReader checks GetMediaForFragmentList by sendfile (client.HeaderSendfile,
// a kvs server's connection, the FS store) to a reader that takes about 2.6 s for a 4 MiB
// fragment: sendfile runs under the connection's pace, so a 1 s MediaWriteTimeout does not cut it.
func TestPacedSendfileSlowReader(t *testing.T) {
	t.Parallel()
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("kvs!"), 1<<20)
	ts, n := pacedServerStore(t, st, payload, false)

	c := dialSlow(t, ts.Listener.Addr().String())
	body := `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(n) + `"]}`
	before := sentByFile.Load()
	fmt.Fprintf(c, "POST /getMediaForFragmentList HTTP/1.1\r\nHost: kvs\r\nContent-Type: application/json\r\n%s: 1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		headerSendfile, len(body), body)
	br := bufio.NewReaderSize(c, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength <= int64(len(payload)) {
		t.Fatalf("status %d, Content-Length %d: want 200 and more than the %d-byte fragment", resp.StatusCode, resp.ContentLength, len(payload))
	}
	got, err := readSlowly(br, int(resp.ContentLength))
	if err != nil {
		t.Fatalf("read %d of %d bytes: %v", len(got), resp.ContentLength, err)
	}
	if at := bytes.Index(got, payload); at < 0 || !bytes.Contains(got[at+len(payload):], []byte(mkv.TagServerSideTimestamp)) {
		t.Fatalf("the answer (%d bytes) does not hold the stored fragment followed by its tags", len(got))
	}
	if sent := sentByFile.Load() - before; sent < int64(len(payload)) {
		t.Errorf("%d bytes sent by sendfile, want the %d-byte fragment", sent, len(payload))
	}
}

// TestPacedConnHTTP2SlowReader checks a media answer over HTTP/2 on a connection of Listener
// (TLS, ConnContext set): HTTP/2 writes go through the server's own framing, whose write deadline
// (ResponseController.SetWriteDeadline) is a timer on the stream, not the connection's pace, so
// the answer must still be written in pieces each under its own deadline. A reader that takes
// about 2.6 s for a 4 MiB fragment gets all of it under a 1 s MediaWriteTimeout.
func TestPacedConnHTTP2SlowReader(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("kvs!"), 1<<20)
	ts, n := pacedServer(t, payload, true)
	client := ts.Client()
	tr := client.Transport.(*http.Transport)
	// A 64 KiB flow-control window: the server sends only as fast as the body is read.
	tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}

	for _, tc := range []struct{ path, body string }{
		{"/getMedia", `{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`},
		{"/getMediaForFragmentList", `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(n) + `"]}`},
	} {
		req, err := http.NewRequest(http.MethodPost, ts.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(hdrNoFollow, "1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %d over %s: %s", tc.path, resp.StatusCode, resp.Proto, b)
		}
		var got []byte
		for {
			b, err := readSlowly(resp.Body, 16<<10)
			got = append(got, b...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: read error after %d of over %d bytes: %v", tc.path, len(got), len(payload), err)
			}
		}
		resp.Body.Close()
		if !bytes.Contains(got, payload) {
			t.Fatalf("%s: the answer (%d bytes) does not hold the stored fragment", tc.path, len(got))
		}
	}
}

// TestSlowReadersOfStoredFragment: GetMedia readers of a stored fragment that read slowly (or not
// at all, within the write timeout) hold a piece of it each, not all of it. Eight readers of a 16
// MiB fragment grew the heap by 8 × 16 MiB before: the fragment was read whole into each reader's
// buffer before its first byte went out. Not parallel: it measures the heap, with the package's
// parallel tests paused.
func TestSlowReadersOfStoredFragment(t *testing.T) {
	const readers, size = 8, 16 << 20
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("kvs!"), size/4)
	storeLargeFragment(t, fs, "cam", payload)
	srv, err := New(Config{Store: fs, MediaWriteTimeout: 30 * time.Second, RetentionInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var delivering atomic.Int32
	srv.media.testDeliver = func(uint64, bool) { delivering.Add(1) }
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(sndbufListener{ts.Listener})
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = srv.Close(); _ = fs.Close() })

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	body := `{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`
	for range readers {
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		fmt.Fprintf(c, "POST /getMedia HTTP/1.1\r\nHost: kvs\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		// The first bytes only; then the reader stops reading.
		if _, err := io.ReadFull(c, make([]byte, 4<<10)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every reader's fragment on its way", 10*time.Second, func() bool { return delivering.Load() == readers })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %.1f MiB for %d readers of a %d MiB fragment", float64(grown)/(1<<20), readers, size>>20)
	if limit := int64(readers * 3 << 20); grown > limit {
		t.Errorf("heap in use grew by %d MiB for %d readers of a %d MiB stored fragment: want at most %d MiB (a piece each, not the fragment)",
			grown>>20, readers, size>>20, limit>>20)
	}
}

// TestSlowListReadersOfStoredFragment: GetMediaForFragmentList readers of a stored fragment that
// read slowly (or not at all, for less than the write timeout) hold a piece of it each, as GetMedia
// readers do (TestSlowReadersOfStoredFragment): the chunk was read whole into each answer's buffer
// first, and the heap grew by 128 MiB for 8 readers of a 16 MiB fragment.
func TestSlowListReadersOfStoredFragment(t *testing.T) {
	const readers, size = 8, 16 << 20
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := storeLargeFragment(t, fs, "cam", bytes.Repeat([]byte("kvs!"), size/4))
	srv, err := New(Config{Store: fs, MediaWriteTimeout: 30 * time.Second, RetentionInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(sndbufListener{ts.Listener})
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = srv.Close(); _ = fs.Close() })

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	body := `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(n) + `"]}`
	for range readers {
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		fmt.Fprintf(c, "POST /getMediaForFragmentList HTTP/1.1\r\nHost: kvs\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		// The status and the first bytes of the chunk only (the answer is being written); then
		// the reader stops reading.
		b := make([]byte, 4<<10)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
			t.Fatalf("answer: %.200q", b)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %.1f MiB for %d readers of a %d MiB fragment", float64(grown)/(1<<20), readers, size>>20)
	if limit := int64(readers * 3 << 20); grown > limit {
		t.Errorf("heap in use grew by %d MiB for %d readers of a %d MiB stored fragment: want at most %d MiB (a piece each, not the fragment)",
			grown>>20, readers, size>>20, limit>>20)
	}
}
