package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// hostileEnv is one server (FS store) under attack, with a control stream whose stored bytes must
// never change, and short timeouts so that stalls end quickly.
type hostileEnv struct {
	*mediaEnv
	clip    *clip
	control map[uint64][]byte // fragment number → stored record bytes
	victims atomic.Int32
	// handlers counts this server's requests whose handler has not returned. The test runs in
	// parallel with others of the package, so runtime.NumGoroutine is no measure of this
	// server's goroutines; every goroutine a request starts ends before its handler returns.
	handlers atomic.Int64
}

// smallBufferListener shrinks the send buffer of accepted connections, so that a client that
// stops reading blocks the server's writes after a few kilobytes instead of megabytes. (The
// receive buffer stays: a small window makes every upload crawl on a busy machine.)
type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

const hostileMaxFragmentSize = 300_000

func newHostileEnv(t *testing.T) *hostileEnv {
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Store: fs, PutMediaReadTimeout: time.Second, MediaWriteTimeout: time.Second, MaxFragmentDuration: 2 * time.Second,
		RequestReadTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv.media.maxFragmentSize = hostileMaxFragmentSize
	h := &hostileEnv{clip: loadClip(t, "h264.mkv"), control: map[uint64][]byte{}}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.handlers.Add(1)
		defer h.handlers.Add(-1)
		srv.ServeHTTP(w, r)
	}))
	ts.Listener = smallBufferListener{ts.Listener}
	ts.Start()
	t.Cleanup(func() { ts.Close(); srv.Close(); fs.Close() })
	h.mediaEnv = &mediaEnv{srv: srv, ts: ts, store: fs}
	h.createStream(t, "control", 24)
	pc := h.startPut(t, "control")
	pc.write(h.clip.header())
	for i := range 5 {
		n := pc.fragment(h.clip.cluster(t, i, baseMillis), h.clip.fragTimecode(i, baseMillis), true)
		h.control[n] = h.record(t, "control", n)
	}
	pc.end()
	return h
}

// record returns the stored bytes of a fragment.
func (h *hostileEnv) record(t *testing.T, stream string, n uint64) []byte {
	t.Helper()
	rc, _, err := h.store.Open(context.Background(), stream, n)
	if err != nil {
		t.Fatalf("open %s/%d: %v", stream, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s/%d: %v", stream, n, err)
	}
	return b
}

// victim creates a fresh stream for one case.
func (h *hostileEnv) victim(t *testing.T) string {
	name := fmt.Sprintf("victim-%d", h.victims.Add(1))
	h.createStream(t, name, 1)
	return name
}

// checkControl requires the control stream to hold exactly its fragments, byte for byte.
func (h *hostileEnv) checkControl(t *testing.T) {
	t.Helper()
	metas, err := h.store.Range(context.Background(), "control", 0, 0)
	if err != nil || len(metas) != len(h.control) {
		t.Fatalf("control stream: %d fragments (%v), want %d", len(metas), err, len(h.control))
	}
	for _, m := range metas {
		if !bytes.Equal(h.record(t, "control", m.Number), h.control[m.Number]) {
			t.Fatalf("control fragment %d changed", m.Number)
		}
	}
	resp := h.post(t, context.Background(), "/getMediaForFragmentList", map[string]any{"StreamName": "control", "Fragments": h.controlNumbers()})
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("control GetMediaForFragmentList: %d", resp.StatusCode)
	}
	if frags := readFragments(t, resp.Body); len(frags) != len(h.control) {
		t.Fatalf("control GetMediaForFragmentList: %d fragments", len(frags))
	}
}

func (h *hostileEnv) controlNumbers() []string {
	var out []string
	for n := range h.control {
		out = append(out, formatFragmentNumber(n))
	}
	return out
}

// apiCall posts a raw body and returns the status, error type and body.
func (h *hostileEnv) apiCall(t *testing.T, path string, body []byte, hdr ...string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.ts.URL+path, bytes.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	typ := resp.Header.Get("x-amzn-ErrorType")
	if resp.StatusCode != 200 {
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Type != typ || eb.Message == "" {
			t.Fatalf("%s: error body %q is not {__type, Message} matching %q", path, b, typ)
		}
	}
	return resp.StatusCode, typ, b
}

// wantAPI requires an HTTP error answer of the given status and KVS type.
func (h *hostileEnv) wantAPI(t *testing.T, status int, typ, path string, body []byte, hdr ...string) {
	t.Helper()
	got, gotTyp, b := h.apiCall(t, path, body, hdr...)
	if got != status || gotTyp != typ {
		t.Fatalf("%s %.80q: %d %s %s, want %d %s", path, body, got, gotTyp, b, status, typ)
	}
}

// putBody uploads body (whole, with a length) to stream and returns the acks.
func (h *hostileEnv) putBody(t *testing.T, stream string, body []byte) []ackEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.ts.URL+"/putMedia", bytes.NewReader(body))
	req.Header.Set(hdrStreamName, stream)
	req.Header.Set(hdrTimecodeType, "ABSOLUTE")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("putMedia: %d", resp.StatusCode)
	}
	var acks []ackEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev ackEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("ack %q: %v", sc.Text(), err)
		}
		if ev.EventType != ackIdle {
			acks = append(acks, ev)
		}
	}
	return acks
}

// wantAckError requires the acks to end with ERROR id, and the stream to hold exactly stored
// fragments afterwards, each decodable.
func (h *hostileEnv) wantAckError(t *testing.T, stream string, acks []ackEvent, id, stored int) {
	t.Helper()
	if len(acks) == 0 || acks[len(acks)-1].EventType != ackError || acks[len(acks)-1].ErrorId != id || acks[len(acks)-1].ErrorCode != ackErrors[id] {
		t.Fatalf("acks %+v, want them to end with ERROR %d %s", acks, id, ackErrors[id])
	}
	h.wantStored(t, stream, stored)
}

func (h *hostileEnv) wantStored(t *testing.T, stream string, n int) {
	t.Helper()
	metas, frags := storedFragments(t, h.store, stream)
	if len(metas) != n {
		t.Fatalf("%s holds %d fragments, want %d", stream, len(metas), n)
	}
	for i, f := range frags {
		if len(f.Frames) == 0 {
			t.Fatalf("%s fragment %d has no frames", stream, metas[i].Number)
		}
	}
}

// rawConn dials the server with a tiny receive buffer: a client that can stop reading.
func (h *hostileEnv) rawConn(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", h.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetReadBuffer(4 << 10)
	t.Cleanup(func() { tc.Close() })
	return tc
}

// sessions counts the PutMedia uploads in progress on stream.
func (h *hostileEnv) sessions(stream string) int {
	m := h.srv.media
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions[stream])
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// Building blocks of hostile bodies.
func ebmlSegment() []byte { return mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska")) }

// vint8 is an 8-byte EBML size (the largest that is not "unknown").
func vint8(n uint64) []byte {
	b := []byte{0x01, 0, 0, 0, 0, 0, 0, 0}
	for i := 7; i >= 1; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return b
}

const petabyte = 1 << 50

func element(id uint32, size []byte, payload []byte) []byte {
	var b []byte
	for shift := 24; shift >= 0; shift -= 8 {
		if v := byte(id >> shift); v != 0 || len(b) > 0 {
			b = append(b, v)
		}
	}
	b = append(b, size...)
	return append(b, payload...)
}

// TestHostileInput is the table of attacks. Each case states the answer a KVS client expects (an
// ACK ErrorId/ErrorCode, or an HTTP status with its error type); after each one the server still
// answers, the heap stays bounded, goroutines come back down, and the control stream's stored
// bytes are unchanged.
func TestHostileInput(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	hostileInput(t, false)
}

// TestHostileTimeouts is the part of the table that waits out the server's timeouts, side by side
// on a server of its own, so the waits overlap the rest of the table (TestHostileInput) instead of
// following it: the two were the last test of the package to end.
func TestHostileTimeouts(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	hostileInput(t, true)
}

// hostileInput runs the cases of the table that wait out a timeout (waiting), or the others.
func hostileInput(t *testing.T, waiting bool) {
	h := newHostileEnv(t)
	c := h.clip
	header := c.header()
	good := func(i int) []byte { return c.cluster(t, i, baseMillis) }
	key := c.frags[0][0]
	clusterOf := func(tc int64, frames ...mkv.Frame) []byte {
		b, err := mkv.AppendCluster(nil, tc, frames)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rng := rand.New(rand.NewPCG(7, 7))

	cases := []struct {
		name string
		want string // the answer, for the reader and the report
		run  func(t *testing.T)
		// waits marks a case that waits out one of the server's timeouts (a second or two) and
		// touches nothing but its own stream and connection: these run side by side, in
		// TestHostileTimeouts (six seconds one after the other, which ended the package's test run).
		waits bool
	}{
		{"random bytes as the PutMedia body", "ERROR 4006 INVALID_MKV_DATA, nothing stored", func(t *testing.T) {
			v := h.victim(t)
			junk := make([]byte, 64<<10)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			h.wantAckError(t, v, h.putBody(t, v, junk), 4006, 0)
		}, false},
		{"truncated EBML at 60 offsets", "a cut inside an element: ERROR 4006 and only the whole fragments before it stored; a cut between clusters: a normal end", func(t *testing.T) {
			body := cat(header, good(0), good(1))
			bounds := map[int]int{len(header): 0, len(header) + len(good(0)): 1, len(body): 2}
			for k := range 60 {
				cut := 1 + k*(len(body)-1)/59
				if k == 59 {
					cut = len(body)
				}
				v := h.victim(t)
				acks := h.putBody(t, v, body[:cut])
				if whole, ok := bounds[cut]; ok {
					if len(acks) > 0 && acks[len(acks)-1].EventType == ackError {
						t.Fatalf("cut at %d (a boundary): %+v", cut, acks[len(acks)-1])
					}
					h.wantStored(t, v, whole)
					continue
				}
				whole := 0
				if cut > len(header)+len(good(0)) {
					whole = 1
				}
				h.wantAckError(t, v, acks, 4006, whole)
			}
		}, false},
		{"EBML header claiming a petabyte", "ERROR 4006, no allocation", func(t *testing.T) {
			v := h.victim(t)
			h.wantAckError(t, v, h.putBody(t, v, element(mkv.IDEBML, vint8(petabyte), make([]byte, 100))), 4006, 0)
		}, false},
		{"cluster claiming a petabyte", "ERROR 4006 when the body ends inside it, the fragments before it stored", func(t *testing.T) {
			v := h.victim(t)
			cl := good(1)
			body := cat(header, good(0), element(mkv.IDCluster, vint8(petabyte), cl[12:]))
			h.wantAckError(t, v, h.putBody(t, v, body), 4006, 1)
		}, false},
		{"SimpleBlock claiming a petabyte", "ERROR 4001 MAX_FRAGMENT_SIZE_REACHED before reading it", func(t *testing.T) {
			v := h.victim(t)
			inner := cat(mkv.AppendUint(nil, 0xE7, uint64(baseMillis)), element(mkv.IDSimpleBlock, vint8(petabyte), []byte{0x81, 0, 0, 0x80}))
			body := cat(header, element(mkv.IDCluster, vint8(uint64(len(inner))+petabyte), inner))
			h.wantAckError(t, v, h.putBody(t, v, body), 4001, 0)
		}, false},
		{"Tags claiming a petabyte", "ERROR 4006 (over the 1 MiB tags cap) before reading it", func(t *testing.T) {
			v := h.victim(t)
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), element(0x1254C367, vint8(petabyte), make([]byte, 1000)))), 4006, 1)
		}, false},
		{"a huge tag (2 MiB value)", "ERROR 4006 (over the 1 MiB tags cap)", func(t *testing.T) {
			v := h.victim(t)
			tags := mkv.AppendTags(nil, mkv.SimpleTag{Name: "BIG", Value: strings.Repeat("x", 2<<20)})
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), tags, good(1))), 4006, 1)
		}, false},
		{"eleven producer tags for one fragment", "ERROR 4009 FRAGMENT_METADATA_LIMIT_REACHED", func(t *testing.T) {
			v := h.victim(t)
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), mkv.AppendTags(nil, manyTags(11)...), good(1))), 4009, 1)
		}, false},
		{"no EBML header", "ERROR 4006", func(t *testing.T) {
			v := h.victim(t)
			seg := mkv.AppendTracks(mkv.AppendInfo(mkv.AppendSegmentStart(nil), 0, ""), c.tracks)
			h.wantAckError(t, v, h.putBody(t, v, cat(seg, good(0))), 4006, 0)
		}, false},
		{"no Tracks", "ERROR 4006", func(t *testing.T) {
			v := h.victim(t)
			h.wantAckError(t, v, h.putBody(t, v, cat(mkv.AppendInfo(ebmlSegment(), 0, ""), good(0))), 4006, 0)
		}, false},
		{"first frame not a keyframe", "ERROR 4006, the fragment not stored", func(t *testing.T) {
			v := h.victim(t)
			src := c.frags[1][1:]
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), clusterOf(baseMillis+src[0].Timecode, shift(src, baseMillis)...))), 4006, 1)
		}, false},
		{"timecodes going backwards", "ERROR 4004 FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", func(t *testing.T) {
			v := h.victim(t)
			tc := c.fragTimecode(1, baseMillis) - 5000
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), good(1), clusterOf(tc, frameAt(key, tc)))), 4004, 2)
		}, false},
		{"a fragment over the size limit", "ERROR 4001 MAX_FRAGMENT_SIZE_REACHED, the fragment not stored", func(t *testing.T) {
			v := h.victim(t)
			tc := c.fragTimecode(1, baseMillis)
			var frames []mkv.Frame
			for i := range 40 {
				frames = append(frames, mkv.Frame{Track: 1, Timecode: tc + int64(i)*40, Keyframe: i == 0, Data: make([]byte, 10_000)})
			}
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), clusterOf(tc, frames...))), 4001, 1)
		}, false},
		{"a fragment over the duration limit", "ERROR 4002 MAX_FRAGMENT_DURATION_REACHED (limit 2 s here)", func(t *testing.T) {
			v := h.victim(t)
			tc := c.fragTimecode(1, baseMillis)
			h.wantAckError(t, v, h.putBody(t, v, cat(header, good(0), clusterOf(tc, frameAt(key, tc), frameAt(c.frags[0][1], tc+2500)))), 4002, 1)
		}, false},
		{"a body that stalls forever between fragments", "ERROR 4000 STREAM_READ_ERROR after PutMediaReadTimeout (1 s here)", func(t *testing.T) {
			v := h.victim(t)
			pc := h.startPut(t, v)
			pc.write(header)
			pc.fragment(good(0), c.fragTimecode(0, baseMillis), true)
			start := time.Now()
			pc.expectError(4000)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("stall detected after %v", d)
			}
			h.wantStored(t, v, 1)
		}, true},
		{"a body that stalls inside a fragment", "ERROR 4000 naming that fragment, which is not stored", func(t *testing.T) {
			v := h.victim(t)
			pc := h.startPut(t, v)
			pc.write(header)
			pc.fragment(good(0), c.fragTimecode(0, baseMillis), true)
			g := good(1)
			pc.write(g[:len(g)/2])
			b := pc.expect(ackBuffering, 0)
			if ev := pc.expectError(4000); ev.FragmentNumber != b.FragmentNumber {
				t.Fatalf("ERROR names %q, the stalled fragment is %s", ev.FragmentNumber, b.FragmentNumber)
			}
			h.wantStored(t, v, 1)
		}, true},
		{"a producer that never reads its acks", "its ack writes time out (MediaWriteTimeout, 1 s here) and the upload is dropped; no unbounded buffering", func(t *testing.T) {
			v := h.victim(t)
			conn := h.rawConn(t)
			fmt.Fprintf(conn, "POST /putMedia HTTP/1.1\r\nHost: kvs\r\nTransfer-Encoding: chunked\r\n%s: %s\r\n%s: ABSOLUTE\r\n\r\n", hdrStreamName, v, hdrTimecodeType)
			chunk := func(b []byte) error {
				_ = conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
				_, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", len(b), b)
				return err
			}
			if err := chunk(header); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "upload starts", 5*time.Second, func() bool { return h.sessions(v) == 1 })
			tc := int64(baseMillis)
			for i := 0; i < 5000 && h.sessions(v) == 1; i++ { // tiny fragments: three acks each, never read
				if chunk(clusterOf(tc, mkv.Frame{Track: 1, Timecode: tc, Keyframe: true, Data: []byte{0, 0, 0, 1, 0x65}})) != nil {
					break
				}
				tc += 40
			}
			waitFor(t, "the upload is dropped", 10*time.Second, func() bool { return h.sessions(v) == 0 })
			metas, _ := storedFragments(t, h.store, v)
			t.Logf("dropped after %d fragments stored", len(metas))
		}, true},
		{"a GetMedia reader that never reads", "its chunk writes time out (1 s here) and the response is dropped", func(t *testing.T) {
			v := h.victim(t)
			// 30 stored chunks of the control stream's first fragment: about 200 kB to send.
			fn, _ := parseFragmentNumber(h.controlNumbers()[0])
			appendMany(t, h.store, v, 30, func(int) (time.Time, time.Duration) { return time.Now(), 0 }, h.control[fn])
			var delivered atomic.Int32
			h.srv.media.testDeliver = func(uint64, bool) { delivered.Add(1) }
			defer func() { h.srv.media.testDeliver = nil }()
			conn := h.rawConn(t)
			body := fmt.Sprintf(`{"StreamName":%q,"StartSelector":{"StartSelectorType":"EARLIEST"}}`, v)
			fmt.Fprintf(conn, "POST /getMedia HTTP/1.1\r\nHost: kvs\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			waitFor(t, "GetMedia starts sending", 5*time.Second, func() bool { return delivered.Load() > 0 })
			// The handler blocks in a write, times out after 1 s and returns.
			waitFor(t, "the GetMedia handler is gone", 10*time.Second, func() bool { return h.handlers.Load() == 0 })
			if n := delivered.Load(); n >= 30 {
				t.Fatalf("all %d chunks were delivered to a reader that reads nothing", n)
			}
			t.Logf("dropped after %d of 30 chunks", delivered.Load())
		}, false},
		{"bad and path-traversal stream names", "400 InvalidArgumentException everywhere (PutMedia before any ack)", func(t *testing.T) {
			for _, name := range []string{"../control", "a/b", "..", ".", strings.Repeat("n", 257), "cam\x00", "cam%2F..", "/etc/passwd", "con trol"} {
				js, _ := json.Marshal(map[string]string{"StreamName": name})
				h.wantAPI(t, 400, codeInvalidArgument, "/describeStream", js)
				h.wantAPI(t, 400, codeInvalidArgument, "/createStream", js)
				if !strings.ContainsAny(name, "\x00") {
					h.wantAPI(t, 400, codeInvalidArgument, "/putMedia", header, hdrStreamName, name, hdrTimecodeType, "ABSOLUTE")
				}
			}
			for _, arn := range []string{"arn:aws:kinesisvideo:us-east-1:000000000000:stream/../1", "arn:aws:kinesisvideo:us-east-1:000000000000:stream/control/../../x/1"} {
				js, _ := json.Marshal(map[string]string{"StreamARN": arn})
				h.wantAPI(t, 400, codeInvalidArgument, "/describeStream", js)
			}
		}, false},
		{"oversized JSON (2 MiB)", "400 InvalidArgumentException: the body exceeds MaxRequestBody", func(t *testing.T) {
			big := []byte(`{"StreamName":"` + strings.Repeat("a", 2<<20) + `"}`)
			h.wantAPI(t, 400, codeInvalidArgument, "/createStream", big)
			h.wantAPI(t, 400, codeInvalidArgument, "/getMedia", big)
		}, false},
		{"malformed JSON", "400 InvalidArgumentException", func(t *testing.T) {
			for _, b := range []string{`{"StreamName":`, `{"StreamName":"control"`, `[1,2]`, `"control"`, "{\"StreamName\":\"\xff\xfe\"}", `{"StreamName":"control"}}`} {
				h.wantAPI(t, 400, codeInvalidArgument, "/describeStream", []byte(b))
			}
		}, false},
		{"a JSON body that stalls", "400 InvalidArgumentException after RequestReadTimeout (1 s here), for the control plane and GetMedia alike", func(t *testing.T) {
			for _, path := range []string{"/createStream", "/getMedia"} {
				t.Run(path, func(t *testing.T) {
					t.Parallel()
					conn := h.rawConn(t)
					start := time.Now()
					fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: kvs\r\nContent-Length: 100\r\n\r\n{\"StreamName\":", path)
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 400 || resp.Header.Get("x-amzn-ErrorType") != codeInvalidArgument {
						t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"))
					}
					if d := time.Since(start); d > 5*time.Second {
						t.Fatalf("answered after %v", d)
					}
				})
			}
		}, true},
		{"a live GetMedia outlives RequestReadTimeout", "the read deadline ends with the request body: a live reader still gets a fragment published 1.5 s later", func(t *testing.T) {
			v := h.victim(t)
			resp := h.post(t, t.Context(), "/getMedia", map[string]any{"StreamName": v, "StartSelector": map[string]any{"StartSelectorType": "NOW"}})
			defer resp.Body.Close()
			time.Sleep(1500 * time.Millisecond) // past RequestReadTimeout: the point of the case
			pc := h.startPut(t, v)
			pc.write(header)
			n := pc.fragment(good(0), c.fragTimecode(0, baseMillis), true)
			pc.end()
			f, err := mkv.NewFragmentReader(resp.Body).Next()
			if err != nil || tag(t, f, mkv.TagFragmentNumber) != formatFragmentNumber(n) {
				t.Fatalf("live reader: %v", err)
			}
		}, true},
		{"deeply nested JSON", "400 InvalidArgumentException, no stack blow-up", func(t *testing.T) {
			deep := `{"StreamName":"control","Tags":` + strings.Repeat(`{"a":`, 100_000) + `1` + strings.Repeat(`}`, 100_000) + `}`
			h.wantAPI(t, 400, codeInvalidArgument, "/createStream", []byte(deep))
		}, false},
		{"wrongly typed JSON", "400 InvalidArgumentException", func(t *testing.T) {
			for path, b := range map[string]string{
				"/describeStream":          `{"StreamName":5}`,
				"/createStream":            `{"StreamName":"x","DataRetentionInHours":"24"}`,
				"/getMedia":                `{"StreamName":"control","StartSelector":"NOW"}`,
				"/listFragments":           `{"StreamName":"control","MaxResults":1.5}`,
				"/getMediaForFragmentList": `{"StreamName":"control","Fragments":"1"}`,
				"/updateDataRetention":     `{"StreamName":"control","CurrentVersion":1,"Operation":"INCREASE_DATA_RETENTION","DataRetentionChangeInHours":1}`,
			} {
				h.wantAPI(t, 400, codeInvalidArgument, path, []byte(b))
			}
		}, false},
		{"unknown start selector", "400 InvalidArgumentException", func(t *testing.T) {
			h.wantAPI(t, 400, codeInvalidArgument, "/getMedia", []byte(`{"StreamName":"control","StartSelector":{"StartSelectorType":"LATEST"}}`))
		}, false},
		{"missing selector fields", "400 InvalidArgumentException for each", func(t *testing.T) {
			for _, sel := range []string{``, `,"StartSelector":{}`, `,"StartSelector":{"StartSelectorType":"FRAGMENT_NUMBER"}`,
				`,"StartSelector":{"StartSelectorType":"SERVER_TIMESTAMP"}`, `,"StartSelector":{"StartSelectorType":"PRODUCER_TIMESTAMP","AfterFragmentNumber":"1"}`,
				`,"StartSelector":{"StartSelectorType":"CONTINUATION_TOKEN"}`, `,"StartSelector":{"StartSelectorType":"FRAGMENT_NUMBER","AfterFragmentNumber":"12x"}`} {
				h.wantAPI(t, 400, codeInvalidArgument, "/getMedia", []byte(`{"StreamName":"control"`+sel+`}`))
			}
		}, false},
		{"GetMediaForFragmentList: unknown fragment numbers", "404 ResourceNotFoundException before any media", func(t *testing.T) {
			nums := append(h.controlNumbers(), "91343852333000000000000000000000000000000999999")
			js, _ := json.Marshal(map[string]any{"StreamName": "control", "Fragments": nums})
			h.wantAPI(t, 404, codeResourceNotFound, "/getMediaForFragmentList", js)
			js, _ = json.Marshal(map[string]any{"StreamName": "control", "Fragments": []string{strings.Repeat("9", 200)}})
			h.wantAPI(t, 400, codeInvalidArgument, "/getMediaForFragmentList", js)
			js, _ = json.Marshal(map[string]any{"StreamName": "control", "Fragments": make([]string, 1001)})
			h.wantAPI(t, 400, codeInvalidArgument, "/getMediaForFragmentList", js)
		}, false},
		{"GetMediaForFragmentList: duplicate fragment numbers", "200, one chunk per requested number in request order (duplicates repeated), memory bounded by one fragment", func(t *testing.T) {
			one := h.controlNumbers()[0]
			nums := make([]string, 1000)
			for i := range nums {
				nums[i] = one
			}
			resp := h.post(t, t.Context(), "/getMediaForFragmentList", map[string]any{"StreamName": "control", "Fragments": nums})
			defer resp.Body.Close()
			frags := readFragments(t, resp.Body)
			if resp.StatusCode != 200 || len(frags) != 1000 {
				t.Fatalf("%d, %d fragments", resp.StatusCode, len(frags))
			}
			for _, f := range frags {
				if tag(t, f, mkv.TagFragmentNumber) != one {
					t.Fatal("a chunk of another fragment")
				}
			}
		}, false},
		{"bad PutMedia headers", "400 InvalidArgumentException before any ack", func(t *testing.T) {
			for _, hdr := range [][]string{
				{hdrStreamName, "control", hdrTimecodeType, "SIDEWAYS"},
				{hdrStreamName, "control", hdrTimecodeType, "RELATIVE"},
				{hdrStreamName, "control", hdrTimecodeType, "ABSOLUTE", hdrProducerStartTime, "1e400"},
				{hdrStreamName, "control", hdrTimecodeType, "ABSOLUTE", hdrProducerStartTime, "-1"},
				{hdrTimecodeType, "ABSOLUTE"},
				{hdrStreamName, "control", hdrStreamARN, "arn:aws:kinesisvideo:us-east-1:000000000000:stream/other/1", hdrTimecodeType, "ABSOLUTE"},
			} {
				h.wantAPI(t, 400, codeInvalidArgument, "/putMedia", cat(header, good(9)), hdr...)
			}
			h.wantAPI(t, 404, codeResourceNotFound, "/putMedia", cat(header, good(9)), hdrStreamName, "nobody", hdrTimecodeType, "ABSOLUTE")
		}, false},
		{"a stream deleted while a producer and a consumer are attached", "producer: ERROR 4008 STREAM_NOT_ACTIVE; consumer: an error chunk (ERROR_ID 4000, STREAM_DELETED), then the end", func(t *testing.T) {
			v := h.victim(t)
			var arn struct{ StreamInfo struct{ StreamARN string } }
			h.call(t, "/describeStream", map[string]string{"StreamName": v}, &arn)
			pc := h.startPut(t, v)
			pc.write(header)
			n := pc.fragment(good(0), c.fragTimecode(0, baseMillis), true)
			resp := h.post(t, t.Context(), "/getMedia", map[string]any{"StreamName": v, "StartSelector": map[string]any{"StartSelectorType": "EARLIEST"}})
			defer resp.Body.Close()
			fr := mkv.NewFragmentReader(resp.Body)
			if f, err := fr.Next(); err != nil || tag(t, f, mkv.TagFragmentNumber) != formatFragmentNumber(n) {
				t.Fatalf("first chunk: %v", err)
			}
			g := good(1)
			pc.write(g[:len(g)/2]) // a fragment is open when the stream goes
			pc.expect(ackBuffering, 0)
			h.deleteStream(t, arn.StreamInfo.StreamARN)
			pc.expectError(4008)
			f, err := fr.Next()
			if err != nil {
				t.Fatalf("error chunk: %v", err)
			}
			if id, _ := f.Tag(mkv.TagErrorID); id != "4000" {
				t.Fatalf("error chunk tags %+v", f.Tags)
			}
			if code, _ := f.Tag(mkv.TagErrorCode); code != "STREAM_DELETED" {
				t.Fatalf("error chunk tags %+v", f.Tags)
			}
			if _, err := fr.Next(); err != io.EOF {
				t.Fatalf("after the error chunk: %v", err)
			}
			h.wantAPI(t, 404, codeResourceNotFound, "/describeStream", []byte(`{"StreamName":"`+v+`"}`))
		}, false},
	}
	if len(cases) < 25 {
		t.Fatalf("%d cases", len(cases))
	}
	// After each case (after the waiting ones as a group): the server still answers, the control
	// stream is intact, memory and goroutines are bounded.
	var ms runtime.MemStats
	unharmed := func(t *testing.T) {
		t.Helper()
		h.checkControl(t)
		// The heap is the whole test process's: the package's other tests run beside this
		// one and hold memory for a while (GetImages' frames, the console's live streams, the
		// buffer pool's 64 MiB; once 289 MiB under -race, and 260 MiB for over 5 s in a full
		// run on a loaded machine). Memory this server kept stays; theirs comes and goes, so
		// the heap must come under the bound within a few seconds, not at one instant. A case
		// that made the server hold what its input claims (a petabyte, a body without end)
		// would still be far above it.
		// The heap is read before a collection is forced: in use with its garbage under the
		// bound is under it without (a forced collection of the whole process's heap after each
		// case, beside the package's other tests, was most of this test's time in a full run).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if runtime.ReadMemStats(&ms); ms.HeapInuse <= 512<<20 {
				break
			}
			runtime.GC()
			if runtime.ReadMemStats(&ms); ms.HeapInuse <= 512<<20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("heap in use %d MiB for 10 s", ms.HeapInuse>>20)
			}
		}
		h.ts.Client().CloseIdleConnections()
		waitFor(t, "every handler of the server returned", 10*time.Second, func() bool { return h.handlers.Load() == 0 })
	}
	if !waiting {
		for _, tc := range cases {
			if tc.waits {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				t.Logf("want: %s", tc.want)
				tc.run(t)
				unharmed(t)
			})
		}
		return
	}
	t.Run("side by side", func(t *testing.T) {
		for _, tc := range cases {
			if !tc.waits {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				t.Logf("want: %s", tc.want)
				tc.run(t)
			})
		}
	})
	unharmed(t)
}

// Two producers on one stream (the data path accepts both, kvs-api.md §13.4): fragments never mix
// inside a fragment, everything stored decodes, store order is number order, each producer's
// fragments keep their order, and every PERSISTED ack is a stored fragment. A producer that stalls
// inside a fragment holds the other's acks back (fragments are stored in number order) only until
// its read timeout ends it.
func TestTwoProducersInterleave(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind, func(c *Config) { c.PutMediaReadTimeout = time.Second })
			e.createStream(t, "cam", 1)
			tracks := []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: []byte{1, 0x64, 0, 0x1f}}}
			hdr := mkv.AppendTracks(mkv.AppendInfo(ebmlSegment(), 0, ""), tracks)
			frag := func(who byte, i int, base int64) []byte {
				tc := base + int64(i)*100
				var frames []mkv.Frame
				for k := range 3 {
					frames = append(frames, mkv.Frame{Track: 1, Timecode: tc + int64(k)*30, Keyframe: k == 0,
						Data: append([]byte{who, byte(i), byte(i >> 8), byte(k)}, make([]byte, 500+k*700)...)})
				}
				b, err := mkv.AppendCluster(nil, tc, frames)
				if err != nil {
					t.Fatal(err)
				}
				if i%2 == 1 {
					b = unknownSize(b) // producers use both forms
				}
				return b
			}
			const perProducer = 60
			persisted := map[byte][]string{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, who := range []byte{'A', 'B'} {
				pc := e.startPut(t, "cam")
				base := int64(baseMillis)
				if who == 'B' {
					base += 1_000_000
				}
				wg.Add(2)
				go func() { // writes in random pieces, so clusters of A and B are open at once
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(who), 1))
					body := append([]byte{}, hdr...)
					for i := range perProducer {
						body = append(body, frag(who, i, base)...)
					}
					for len(body) > 0 {
						n := min(len(body), 1+rng.IntN(3000))
						if _, err := pc.pw.Write(body[:n]); err != nil {
							return
						}
						body = body[n:]
					}
					pc.pw.Close()
				}()
				go func() {
					defer wg.Done()
					for ev := range pc.acks {
						if ev.EventType == ackError {
							t.Errorf("producer %c: %+v", who, ev)
						}
						if ev.EventType == ackPersisted {
							mu.Lock()
							persisted[who] = append(persisted[who], ev.FragmentNumber)
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			metas, frags := storedFragments(t, e.store, "cam")
			if len(metas) != 2*perProducer {
				t.Fatalf("stored %d fragments, want %d", len(metas), 2*perProducer)
			}
			next := map[byte]int{}
			stored := map[string]byte{}
			for i, f := range frags {
				if i > 0 && metas[i].Number <= metas[i-1].Number {
					t.Fatalf("store order: %d after %d", metas[i].Number, metas[i-1].Number)
				}
				who := f.Frames[0].Data[0]
				idx := int(f.Frames[0].Data[1]) | int(f.Frames[0].Data[2])<<8
				for k, fr := range f.Frames {
					if fr.Data[0] != who || int(fr.Data[1])|int(fr.Data[2])<<8 != idx || int(fr.Data[3]) != k {
						t.Fatalf("fragment %d mixes frames: frame %d is %q of %d, fragment is %c %d", metas[i].Number, k, fr.Data[0], fr.Data[1], who, idx)
					}
				}
				if idx != next[who] {
					t.Fatalf("producer %c: fragment %d stored after %d", who, idx, next[who]-1)
				}
				next[who]++
				stored[tag(t, f, mkv.TagFragmentNumber)] = who
			}
			for who, nums := range persisted {
				if len(nums) != perProducer {
					t.Errorf("producer %c: %d PERSISTED acks, want %d", who, len(nums), perProducer)
				}
				for _, n := range nums {
					if stored[n] != who {
						t.Errorf("producer %c: PERSISTED %s is not its stored fragment", who, n)
					}
				}
			}
		})
	}

	t.Run("one stalls inside a fragment", func(t *testing.T) {
		e := newMediaEnv(t, "mem", func(c *Config) { c.PutMediaReadTimeout = time.Second })
		e.createStream(t, "cam", 1)
		c := loadClip(t, "h264.mkv")
		a, b := e.startPut(t, "cam"), e.startPut(t, "cam")
		a.write(c.header())
		b.write(c.header())
		ca := c.cluster(t, 0, baseMillis)
		a.write(ca[:len(ca)/2]) // A opens a fragment and goes silent
		a.expect(ackBuffering, 0)
		start := time.Now()
		clusters := make([][]byte, 8)
		for i := range clusters {
			clusters[i] = c.cluster(t, i, baseMillis+50_000)
		}
		stop := make(chan struct{})
		go func() { // B goes on streaming, a fragment every 200 ms
			defer b.pw.Close()
			for _, cl := range clusters {
				if _, err := b.pw.Write(cl); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		b.expect(ackBuffering, 0)
		nb := b.expect(ackReceived, 0)
		a.expectError(4000) // A's read timeout frees the stream...
		for {
			ev, ok := b.next()
			if !ok {
				t.Fatal("B's response ended")
			}
			if ev.EventType == ackError {
				t.Fatalf("B: %+v", ev)
			}
			if ev.EventType == ackPersisted { // ...and B's fragments are stored, first one first
				if ev.FragmentNumber != nb.FragmentNumber {
					t.Fatalf("first PERSISTED %s, want %s", ev.FragmentNumber, nb.FragmentNumber)
				}
				break
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("B's fragment waited %v", d)
		}
		close(stop)
		for range b.acks {
		}
		metas, frags := storedFragments(t, e.store, "cam")
		if len(metas) == 0 || formatFragmentNumber(metas[0].Number) != nb.FragmentNumber {
			t.Fatalf("stored %+v, want B's from %s", metas, nb.FragmentNumber)
		}
		for _, f := range frags {
			if f.Timecode < baseMillis+50_000 {
				t.Fatalf("A's abandoned fragment was stored")
			}
		}
	})
}
