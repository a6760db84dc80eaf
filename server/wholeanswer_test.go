package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// A client that asks for a whole (not streamed) answer larger than the socket buffers and never
// reads it: ListFragments of 1000 fragments, an HLS media fragment. Each write of the answer is
// bounded by MediaWriteTimeout (1 s here), as the streamed answers' are, so the handler returns
// and the answer's memory goes; without it the handler waits in its write for as long as the
// client keeps the connection open (kvs server sets no WriteTimeout: the media answers stream).
func TestStalledReaderOfWholeAnswer(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // waits out write timeouts, 12 s
	h := newHostileEnv(t)
	stalled := func(t *testing.T, request string) {
		t.Helper()
		conn := h.rawConn(t)
		if _, err := fmt.Fprint(conn, request); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the handler starts", 5*time.Second, func() bool { return h.handlers.Load() > 0 })
		waitFor(t, "the handler of the answer nobody reads returns", 10*time.Second, func() bool { return h.handlers.Load() == 0 })
	}

	t.Run("ListFragments", func(t *testing.T) {
		v := h.victim(t)
		chunk := h.control[h.firstControl(t)]
		appendMany(t, h.store, v, 1000, func(int) (time.Time, time.Duration) { return time.Now(), 0 }, chunk)
		body := fmt.Sprintf(`{"StreamName":%q,"MaxResults":1000}`, v)
		stalled(t, fmt.Sprintf("POST /listFragments HTTP/1.1\r\nHost: kvs\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	})

	t.Run("DASH manifest", func(t *testing.T) {
		v := h.victim(t)
		chunk := h.control[h.firstControl(t)]
		base := time.Now().Add(-time.Hour).Truncate(time.Second)
		appendMany(t, h.store, v, 1000, func(i int) (time.Time, time.Duration) { return base.Add(time.Duration(i) * time.Second), time.Second }, chunk)
		session, typ := h.dashURL(t, map[string]any{"StreamName": v, "PlaybackMode": "ON_DEMAND",
			"DisplayFragmentNumber": "ALWAYS", "DisplayFragmentTimestamp": "ALWAYS",
			"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
				"TimestampRange": map[string]any{"StartTimestamp": base.Unix() - 1, "EndTimestamp": base.Unix() + 1000}}})
		if typ != "" {
			t.Fatalf("GetDASHStreamingSessionURL: %s", typ)
		}
		u, err := url.Parse(session)
		if err != nil {
			t.Fatal(err)
		}
		stalled(t, fmt.Sprintf("GET %s?%s HTTP/1.1\r\nHost: kvs\r\n\r\n", u.Path, u.RawQuery))
	})

	t.Run("HLS media fragment", func(t *testing.T) {
		v := h.victim(t)
		c := h.clip
		tc := c.fragTimecode(0, baseMillis)
		key := c.frags[0][0]
		big := append(append([]byte(nil), key.Data...), make([]byte, hostileMaxFragmentSize-20_000)...)
		cl, err := mkv.AppendCluster(nil, tc, []mkv.Frame{{Track: key.Track, Timecode: tc, Keyframe: true, Data: big}})
		if err != nil {
			t.Fatal(err)
		}
		pc := h.startPut(t, v)
		pc.write(c.header())
		n := pc.fragment(cl, tc, true)
		pc.end()
		session, typ := h.hlsURL(t, map[string]any{"StreamName": v, "PlaybackMode": "LIVE"})
		if typ != "" {
			t.Fatalf("GetHLSStreamingSessionURL: %s", typ)
		}
		u, err := url.Parse(session)
		if err != nil {
			t.Fatal(err)
		}
		path := strings.Replace(u.Path, "getHLSMasterPlaylist.m3u8", "getMP4MediaFragment.mp4", 1)
		q := url.Values{"SessionToken": {u.Query().Get("SessionToken")}, "FragmentNumber": {formatFragmentNumber(n)}}
		stalled(t, fmt.Sprintf("GET %s?%s HTTP/1.1\r\nHost: kvs\r\n\r\n", path, q.Encode()))
	})
}

// appendMany stores n fragments of data in stream, the i-th at (server and producer time) and
// lasting what at(i) returns, and waits until all are durable: appended one after another
// without waiting for each (the FS store's group commit syncs them together; one fdatasync each
// took the test 20 s under the suite's load).
func appendMany(t *testing.T, st store.Store, stream string, n int, at func(int) (time.Time, time.Duration), data []byte) {
	t.Helper()
	ctx := t.Context()
	waits := make([]func(context.Context) error, 0, n)
	for i := range n {
		num, err := st.NextNumber(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		ts, d := at(i)
		wait, err := st.AppendAsync(ctx, stream, store.FragmentMeta{Number: num, ServerTime: ts, ProducerTime: ts, Duration: d, Size: int64(len(data))}, data)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, wait)
	}
	for _, wait := range waits {
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// firstControl returns the number of one of the control stream's fragments.
func (h *hostileEnv) firstControl(t *testing.T) uint64 {
	t.Helper()
	for n := range h.control {
		return n
	}
	t.Fatal("no control fragment")
	return 0
}

// A GET (or HEAD) with a body that trickles: the GET routes (health checks, HLS playback URLs,
// the console) read no body, nor does the 405 to a GET /putMedia, but net/http discards what is
// left of it before it writes the answer's headers. That read is bounded by RequestReadTimeout
// (1 s here), as for the KVS operations: the answer goes out, with Connection: close, and the
// handler returns. Without it, a client that sends "Content-Length: 100" and one byte held its
// connection and handler for good (kvs server sets no http.Server ReadTimeout; the HLS and
// health routes are unsigned even with --auth sigv4).
func TestSlowBodyOnGetRoutes(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // waits out read timeouts, 5 s
	h := newHostileEnv(t)
	for _, req := range []string{"GET /healthz", "GET /hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=x", "GET /", "GET /putMedia"} {
		t.Run(req, func(t *testing.T) {
			trickledAnswer(t, h.rawConn(t), req).Body.Close()
			waitFor(t, "the handler returns", 10*time.Second, func() bool { return h.handlers.Load() == 0 })
		})
	}
	// The unsigned listener of kvs server --metrics-listen (OpsHandler) likewise.
	ops := httptest.NewServer(h.srv.OpsHandler())
	t.Cleanup(ops.Close)
	for _, path := range []string{"/metrics", "/readyz"} {
		t.Run("ops "+path, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", ops.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			resp := trickledAnswer(t, conn, "GET "+path)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %d", path, resp.StatusCode)
			}
		})
	}
}

// trickledAnswer sends req (method and path) on conn with a body of which only the first byte
// comes, and returns the answer, which must come within 10 s.
func trickledAnswer(t *testing.T, conn net.Conn, req string) *http.Response {
	t.Helper()
	fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: kvs\r\nContent-Length: 100\r\n\r\n{", req)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v", err)
	}
	return resp
}
