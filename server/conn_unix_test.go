//go:build unix

package server

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
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
	testutil.Slow(t) // waits out write timeouts for seconds
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
	testutil.Slow(t) // waits out write timeouts for seconds
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
	testutil.Slow(t) // waits out write timeouts for seconds
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
	testutil.Slow(t) // waits out write timeouts for seconds
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
	ts := serveSmallBuffers(t, srv, fs)

	before := heapInUse()
	body := `{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`
	for range readers {
		// The first bytes only; then the reader stops reading.
		if _, err := stalledReader(t, ts.Listener.Addr().String(), jsonPost("/getMedia", body)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every reader's fragment on its way", 10*time.Second, func() bool { return delivering.Load() == readers })
	grown := heapInUse() - before
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
	ts := serveSmallBuffers(t, srv, fs)

	before := heapInUse()
	body := `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(n) + `"]}`
	for range readers {
		// The status and the first bytes of the chunk only (the answer is being written); then
		// the reader stops reading.
		if _, err := stalledReader(t, ts.Listener.Addr().String(), jsonPost("/getMediaForFragmentList", body)); err != nil {
			t.Fatal(err)
		}
	}
	grown := heapInUse() - before
	t.Logf("heap in use grew by %.1f MiB for %d readers of a %d MiB fragment", float64(grown)/(1<<20), readers, size>>20)
	if limit := int64(readers * 3 << 20); grown > limit {
		t.Errorf("heap in use grew by %d MiB for %d readers of a %d MiB stored fragment: want at most %d MiB (a piece each, not the fragment)",
			grown>>20, readers, size>>20, limit>>20)
	}
}

// largeClipServer stores count fragments of the H.264 clip in stream "cam" of a new FS store,
// each with size bytes more in its keyframe (the remuxer copies frames as they are), one second
// apart from base on both clocks, and serves them on a listener whose connections have small
// socket buffers. It returns the server, its address and the fragment numbers.
func largeClipServer(t *testing.T, size, count int, base time.Time) (*Server, string, []uint64) {
	t.Helper()
	fs, c := camStore(t)
	var frags [][]mkv.Frame
	for i := range count {
		frames := append([]mkv.Frame(nil), c.frags[0]...)
		frames[0].Data = append(append([]byte(nil), frames[0].Data...), bytes.Repeat([]byte{byte(i)}, size)...)
		frags = append(frags, frames)
	}
	ns := appendClusters(t, fs, c, base, frags)
	srv, err := New(Config{Store: fs, MediaWriteTimeout: 30 * time.Second, RetentionInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := serveSmallBuffers(t, srv, fs)
	return srv, ts.Listener.Addr().String(), ns
}

// serveSmallBuffers serves srv as kvs server does (Listener, ConnContext) on connections with
// small socket send buffers (sndbufListener); the test's cleanup stops it, srv and st.
func serveSmallBuffers(t *testing.T, srv *Server, st store.Store) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = Listener(sndbufListener{ts.Listener})
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = srv.Close(); _ = st.Close() })
	return ts
}

// jsonPost is an HTTP/1.1 request that POSTs the JSON body to path, as a raw connection sends it.
func jsonPost(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: kvs\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}

// stalledReader sends req on a new connection with a small receive buffer, reads the first 4 KiB
// of the answer (its status line first), and then nothing; the connection is closed when the
// test ends, or by the caller.
func stalledReader(t *testing.T, addr, req string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	b := make([]byte, 4<<10)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		return nil, fmt.Errorf("answer: %.300q", b)
	}
	return c, nil
}

// heapInUse returns the heap in use after a collection.
func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestSlowSegmentReadersShare: viewers that ask for the same HLS media segment at the same time
// (the viewers of a live stream) share one copy of it while it is sent, however slowly they read:
// each request remuxed the fragment into a segment of its own and held it until sent, and the heap
// grew by 128 MiB for 8 stalled readers of a 16 MiB fragment's segment.
func TestSlowSegmentReadersShare(t *testing.T) {
	const readers, size = 8, 16 << 20
	base := time.Unix(1_700_000_000, 0)
	_, addr, ns := largeClipServer(t, size, 1, base)
	req := segmentRequest(t, addr, base, ns[0])

	before := heapInUse()
	for range readers {
		if _, err := stalledReader(t, addr, req); err != nil {
			t.Fatal(err)
		}
	}
	grown := heapInUse() - before
	t.Logf("heap in use grew by %.1f MiB for %d readers of a %d MiB fragment's segment", float64(grown)/(1<<20), readers, size>>20)
	if limit := int64(size + readers<<20); grown > limit {
		t.Errorf("heap in use grew by %d MiB for %d readers of a %d MiB fragment's segment: want at most %d MiB (one segment, shared)",
			grown>>20, readers, size>>20, limit>>20)
	}
}

// TestRemuxBudgetBoundsClips: GetClip requests, each remuxing a fragment of its own, take at most
// the remux budget (remux.go) together while their clients read slowly or not at all; the rest
// wait, and are served as the first ones end. Each held its fragment's segment until sent: the heap
// grew by 128 MiB for 8 stalled clips of a 16 MiB fragment, with no bound.
func TestRemuxBudgetBoundsClips(t *testing.T) {
	// Fragments larger than bufpool.MaxPooled: the frame arenas given back are not kept in the
	// buffer pool, whose free buffers (up to bufpool.KeepBytes, whatever the requests) would count.
	const readers, size, fit = 8, 16 << 20, 2
	base := time.Unix(1_700_000_000, 0)
	srv, addr, _ := largeClipServer(t, size, 1, base)
	// Two clips: each takes twice its fragment's stored size, a little over size.
	budget := int64(fit * 2 * (size + 1<<20))
	srv.media.remux = newByteBudget(budget)
	body := fmt.Sprintf(`{"StreamName":"cam","ClipFragmentSelector":{"FragmentSelectorType":"PRODUCER_TIMESTAMP","TimestampRange":{"StartTimestamp":%d,"EndTimestamp":%d}}}`,
		base.Unix()-1, base.Unix())
	req := jsonPost("/getClip", body)

	before := heapInUse()
	conns := make(chan net.Conn, readers)
	errs := make(chan error, readers)
	for range readers {
		go func() {
			c, err := stalledReader(t, addr, req)
			if err != nil {
				errs <- err
				return
			}
			conns <- c
		}()
	}
	var served []net.Conn
	take := func(want int) {
		t.Helper()
		for len(served) < want {
			select {
			case c := <-conns:
				served = append(served, c)
			case err := <-errs:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatalf("%d clips served, want %d (%d waiting)", len(served), want, srv.media.remux.waiting.Load())
			}
		}
	}
	take(fit)
	waitFor(t, "the other clips waiting", 10*time.Second, func() bool { return srv.media.remux.waiting.Load() == readers-fit })
	grown := heapInUse() - before
	t.Logf("heap in use grew by %.1f MiB for %d clips of a %d MiB fragment (%d served, the rest waiting)", float64(grown)/(1<<20), readers, size>>20, len(served))
	if limit := budget + readers<<20; grown > limit {
		t.Errorf("heap in use grew by %d MiB for %d clips of a %d MiB fragment: want at most %d MiB (the budget)", grown>>20, readers, size>>20, limit>>20)
	}
	if len(conns) > 0 {
		t.Errorf("%d clips served beyond the budget", len(conns))
	}
	// The first ones' clients go: the waiting clips are served.
	for _, c := range served {
		c.Close()
	}
	take(2 * fit)
}

// TestSegmentAfterLargeFragment: the segment of a fragment with B-frames is made with the times of
// the fragment before it (fmp4.AppendSegmentAfter), read a frame at a time: that fragment was read
// whole, twice over (its stored chunk and its frames), for every request of the segment after it,
// 32 MiB allocated for a 16 MiB fragment before a segment of a few bytes.
func TestSegmentAfterLargeFragment(t *testing.T) {
	const frames, frameSize = 64, 256 << 10 // 16 MiB before the segment asked for
	base := time.Unix(1_700_000_000, 0)
	ms := base.UnixMilli()
	fs, c := camStore(t)
	frame := func(tc int64, key bool, size int) mkv.Frame {
		return mkv.Frame{Track: 1, Timecode: ms + tc, Keyframe: key, Data: append([]byte{0, 0, 0, 1, 0x41}, make([]byte, size)...)}
	}
	var large []mkv.Frame
	for i := range frames {
		large = append(large, frame(int64(i)*1000/frames, i == 0, frameSize))
	}
	// The next one has B-frames (presented out of decode order).
	bframes := []mkv.Frame{frame(1000, true, 0), frame(1120, false, 0), frame(1040, false, 0), frame(1080, false, 0)}
	ns := appendClusters(t, fs, c, base, [][]mkv.Frame{large, bframes})
	e := newMediaEnvStore(t, fs)
	hls, code := e.hlsURL(t, map[string]any{
		"StreamName": "cam", "PlaybackMode": "ON_DEMAND",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": base.Unix() - 1, "EndTimestamp": base.Unix() + 10}},
	})
	if code != "" {
		t.Fatal(code)
	}
	seg := strings.Replace(hls, "getHLSMasterPlaylist.m3u8", "getMP4MediaFragment.mp4", 1) + "&FragmentNumber=" + formatFragmentNumber(ns[1])
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	status, _, body := httpGet(t, seg)
	runtime.ReadMemStats(&after)
	if status != 200 {
		t.Fatalf("segment: %d %s", status, body)
	}
	alloc := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("%.1f MiB allocated for a %d-byte segment after a %d MiB fragment", float64(alloc)/(1<<20), len(body), frames*frameSize>>20)
	if limit := int64(frames * frameSize / 2); alloc > limit {
		t.Errorf("%d MiB allocated for a %d-byte segment after a %d MiB fragment: want under %d MiB (its times, not its frames)",
			alloc>>20, len(body), frames*frameSize>>20, limit>>20)
	}
}

// TestSlowSegmentReaderCutOff: a client that reads an MP4 media segment steadily but slowly, fast
// enough for the write timeout (each 64 KiB within it), is cut off once it has taken the write
// timeout plus the segment's size at the least send rate, and the segment's share of the remux
// budget comes back (sendWithin). It kept the share as long as it read: two hours for a 16 MiB
// segment read at 2 KiB/s, and sixteen such clients held every other segment and clip back.
func TestSlowSegmentReaderCutOff(t *testing.T) {
	testutil.Slow(t) // waits out write timeouts for seconds
	t.Parallel()
	const size = 4 << 20
	base := time.Unix(1_700_000_000, 0)
	srv, addr, ns := largeClipServer(t, size, 1, base)
	srv.media.writeTimeout = time.Second
	srv.media.minSendRate = size // the segment within about 2 s; the reader below takes 13 s
	req := segmentRequest(t, addr, base, ns[0])
	c, err := stalledReader(t, addr, req)
	if err != nil {
		t.Fatal(err)
	}
	got := 4 << 10
	b := make([]byte, 16<<10)
	for got < size+1<<20 { // 16 KiB every 50 ms: 320 KiB/s, 64 KiB well within the write timeout
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := c.Read(b)
		got += n
		if err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got >= size {
		t.Fatalf("the slow reader got %d bytes of a %d-byte segment: want it cut off", got, size)
	}
	waitFor(t, "the segment's share of the remux budget given back", 10*time.Second, func() bool {
		if !srv.media.remux.sem.TryAcquire(srv.media.remux.size) {
			return false
		}
		srv.media.remux.sem.Release(srv.media.remux.size)
		return true
	})
}

// segmentRequest returns the raw HTTP/1.1 request of fragment n's MP4 media segment in an ON_DEMAND
// HLS session of stream cam (largeClipServer) around base.
func segmentRequest(t *testing.T, addr string, base time.Time, n uint64) string {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/getHLSStreamingSessionURL", "application/json", strings.NewReader(fmt.Sprintf(
		`{"StreamName":"cam","PlaybackMode":"ON_DEMAND","HLSFragmentSelector":{"FragmentSelectorType":"PRODUCER_TIMESTAMP","TimestampRange":{"StartTimestamp":%d,"EndTimestamp":%d}}}`,
		base.Unix()-1, base.Unix()+10)))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ HLSStreamingSessionURL string }
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("session: %d %v", resp.StatusCode, err)
	}
	u, err := url.Parse(out.HLSStreamingSessionURL)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("GET %s?SessionToken=%s&FragmentNumber=%s HTTP/1.1\r\nHost: kvs\r\n\r\n",
		strings.Replace(u.Path, "getHLSMasterPlaylist.m3u8", "getMP4MediaFragment.mp4", 1),
		url.QueryEscape(u.Query().Get("SessionToken")), formatFragmentNumber(n))
}

// camStore returns a new FS store with stream "cam" (retention 1 hour) and the H.264 clip whose
// header appendClusters puts before each fragment.
func camStore(t *testing.T) (*store.FS, *clip) {
	t.Helper()
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.CreateStream(context.Background(), store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	return fs, loadClip(t, "h264.mkv")
}

// appendClusters stores each of frags as one fragment of stream "cam" (c's header, then a cluster
// of its frames), one second apart from base on both clocks, and returns their numbers.
func appendClusters(t *testing.T, fs *store.FS, c *clip, base time.Time, frags [][]mkv.Frame) []uint64 {
	t.Helper()
	ctx := context.Background()
	var ns []uint64
	for i, fr := range frags {
		cluster, err := mkv.AppendCluster(nil, fr[0].Timecode, fr)
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Second)
		n, err := fs.NextNumber(ctx, "cam")
		if err == nil {
			err = store.Append(ctx, fs, "cam", store.FragmentMeta{Number: n, ServerTime: at, ProducerTime: at, Duration: time.Second},
				append(c.header(), cluster...))
		}
		if err != nil {
			t.Fatal(err)
		}
		ns = append(ns, n)
	}
	return ns
}
