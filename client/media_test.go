package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/smithy-go"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// testBase is the producer epoch of the test clips: 2024-01-17T11:10:36.421Z.
const testBase = 1705489836421 * time.Millisecond

// clipFragments cuts a testdata clip into fragments of d with absolute timecodes from testBase.
func clipFragments(t *testing.T, name string, d time.Duration) []*mkv.Fragment {
	t.Helper()
	file, err := os.Open("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	src, err := capture.Open(t.Context(), file, name, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := capture.NewFragmenter(src, capture.FragmenterConfig{TargetDuration: d, Base: testBase})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	var out []*mkv.Fragment
	for {
		f, err := fr.Next(t.Context())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
}

// mediaServer is a kvs server on httptest whose listener and handler tests can wrap.
type mediaServer struct {
	URL    string
	client *Client
	store  store.Store
}

// startMedia starts kvs with wrap around its handler (nil: none) and lis around its listener (nil:
// none), and returns a Client for it.
func startMedia(t *testing.T, wrap func(http.Handler) http.Handler, lis func(net.Listener) net.Listener) *mediaServer {
	t.Helper()
	return startMediaConfig(t, server.Config{}, wrap, lis)
}

// startCam is startMedia with the stream "cam" (24 h) holding the fragments of the H.264 test
// clip, which it returns.
func startCam(t *testing.T, wrap func(http.Handler) http.Handler) (*mediaServer, []*mkv.Fragment) {
	t.Helper()
	m := startMedia(t, wrap, nil)
	m.createStream(t, "cam", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	if _, err := produce(t, m.client, ProducerConfig{Stream: "cam"}, frags); err != nil {
		t.Fatal(err)
	}
	return m, frags
}

// startMediaConfig is startMedia with the server's configuration (its Store, when nil, is a new
// Mem store).
func startMediaConfig(t *testing.T, cfg server.Config, wrap func(http.Handler) http.Handler, lis func(net.Listener) net.Listener) *mediaServer {
	t.Helper()
	st := cfg.Store
	if st == nil {
		st = store.NewMem()
		cfg.Store = st
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewUnstartedServer(h)
	if lis != nil {
		ts.Listener = lis(ts.Listener)
	}
	ts.Start()
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return &mediaServer{URL: ts.URL, client: c, store: st}
}

func (m *mediaServer) createStream(t *testing.T, name string, retention int32) {
	t.Helper()
	in := &kinesisvideo.CreateStreamInput{StreamName: aws.String(name)}
	if retention > 0 {
		in.DataRetentionInHours = aws.Int32(retention)
	}
	if _, err := m.client.Control.CreateStream(t.Context(), in); err != nil {
		t.Fatal(err)
	}
}

// ackLog collects ACK events.
type ackLog struct {
	mu   sync.Mutex
	acks []Ack
}

func (l *ackLog) add(a Ack) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

func (l *ackLog) count(event string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acks {
		if a.EventType == event {
			n++
		}
	}
	return n
}

// produce sends frags with a Producer and closes it.
func produce(t *testing.T, c *Client, cfg ProducerConfig, frags []*mkv.Fragment) (ProducerStats, error) {
	t.Helper()
	p, err := NewProducer(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	err = p.Close(t.Context())
	return p.Stats(), err
}

// consumeAll reads the stream from EARLIEST to the live edge.
func consumeAll(t *testing.T, c *Client, stream string) []*mkv.Fragment {
	t.Helper()
	cons, err := NewConsumer(c, ConsumerConfig{Stream: stream, Start: StartSelector{Type: StartEarliest}, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var out []*mkv.Fragment
	for {
		f, err := cons.Next(t.Context())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next after %d fragments: %v", len(out), err)
		}
		out = append(out, f)
	}
}

// producerMillis returns a fragment's AWS_KINESISVIDEO_PRODUCER_TIMESTAMP in ms.
func producerMillis(t *testing.T, f *mkv.Fragment) int64 {
	t.Helper()
	v, ok := f.Tag(mkv.TagProducerTimestamp)
	if !ok {
		t.Fatalf("fragment without %s: %+v", mkv.TagProducerTimestamp, f.Tags)
	}
	sec, ms, _ := strings.Cut(v, ".")
	tm, err := time.Parse("2006-01-02 15:04:05.000", time.Unix(0, 0).UTC().Format("2006-01-02 15:04:05")+"."+ms)
	if err != nil {
		t.Fatalf("producer timestamp %q: %v", v, err)
	}
	var s int64
	for _, c := range sec {
		s = s*10 + int64(c-'0')
	}
	return s*1000 + int64(tm.Nanosecond()/1e6)
}

func countFrames(frags []*mkv.Fragment) map[uint64]int {
	n := map[uint64]int{}
	for _, f := range frags {
		for _, fr := range f.Frames {
			n[fr.Track]++
		}
	}
	return n
}

func TestProducerConsumerRoundTrip(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "cam", 24)
	frags := clipFragments(t, "h264_aac.mp4", time.Second)
	var acks ackLog
	st, err := produce(t, m.client, ProducerConfig{Stream: "cam", OnAck: acks.add, MaxInFlight: 2}, frags)
	if err != nil {
		t.Fatal(err)
	}
	if st.Fragments != len(frags) || st.Stored != len(frags) || st.Failed != 0 || st.Resent != 0 {
		t.Errorf("stats %+v, want %d fragments all stored", st, len(frags))
	}
	for _, ev := range []string{AckBuffering, AckReceived, AckPersisted} {
		if n := acks.count(ev); n != len(frags) {
			t.Errorf("%d %s acks, want %d", n, ev, len(frags))
		}
	}

	got := consumeAll(t, m.client, "cam")
	if len(got) != len(frags) {
		t.Fatalf("consumed %d fragments, want %d", len(got), len(frags))
	}
	want := countFrames(frags)
	if n := countFrames(got); n[1] != want[1] || n[2] != want[2] || want[1] != 100 || want[2] != 189 {
		t.Errorf("frames per track %v, sent %v (want 100 video, 189 audio with the AAC priming frame)", n, want)
	}
	// The priming frame keeps its DiscardPadding (the whole frame: 1024 samples at 48 kHz).
	if pad := got[0].Frames[slices.IndexFunc(got[0].Frames, func(f mkv.Frame) bool { return f.Track == 2 })].DiscardPadding; pad != -21_333_333 {
		t.Errorf("first audio frame's discard padding %v, want -21.333333ms", pad)
	}
	for i, f := range got {
		if pt := producerMillis(t, f); pt != frags[i].Timecode {
			t.Errorf("fragment %d: producer timestamp %d ms, sent cluster timecode %d", i, pt, frags[i].Timecode)
		}
		if f.Tracks[0].CodecID != "V_MPEG4/ISO/AVC" || f.Tracks[1].CodecID != "A_AAC" {
			t.Errorf("fragment %d tracks %s, %s", i, f.Tracks[0].CodecID, f.Tracks[1].CodecID)
		}
		for j := range f.Frames {
			if string(f.Frames[j].Data) != string(frags[i].Frames[j].Data) || f.Frames[j].Timecode != frags[i].Frames[j].Timecode {
				t.Fatalf("fragment %d frame %d differs", i, j)
			}
		}
	}
}

func TestProducerRetentionZeroEndsOnReceived(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "live", 0)
	frags := clipFragments(t, "h264.mkv", time.Second)
	var acks ackLog
	st, err := produce(t, m.client, ProducerConfig{Stream: "live", OnAck: acks.add}, frags)
	if err != nil {
		t.Fatal(err)
	}
	if st.Stored != len(frags) || acks.count(AckReceived) != len(frags) || acks.count(AckPersisted) != 0 {
		t.Errorf("stats %+v, %d RECEIVED, %d PERSISTED; want %d RECEIVED and no PERSISTED", st,
			acks.count(AckReceived), acks.count(AckPersisted), len(frags))
	}
}

// cutListener closes the first connection that has read more than after bytes, once.
type cutListener struct {
	net.Listener
	after int64
	armed atomic.Bool
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, l: l}, nil
}

type cutConn struct {
	net.Conn
	l *cutListener
	n int64
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	if c.n > c.l.after && c.l.armed.CompareAndSwap(true, false) {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	return n, err
}

// TestProducerReplayAfterCut cuts the PutMedia connection in the middle of the body. The producer
// must reconnect and resend what was not PERSISTED. Delivery is at least once: fragments persisted
// before the cut whose ack was lost are stored twice. The test checks that every fragment is stored
// at least once, that duplicates carry the same producer timestamp and frames, and that all of it
// decodes.
func TestProducerReplayAfterCut(t *testing.T) {
	t.Parallel()
	cl := &cutListener{after: 12_000}
	cl.armed.Store(true)
	m := startMedia(t, nil, func(l net.Listener) net.Listener { cl.Listener = l; return cl })
	m.createStream(t, "cut", 24)
	frags := clipFragments(t, "h264.mkv", time.Second) // 4 fragments of ~7 KB
	st, err := produce(t, m.client, ProducerConfig{Stream: "cut", RetryBackoff: time.Millisecond}, frags)
	if err != nil {
		t.Fatal(err)
	}
	if cl.armed.Load() {
		t.Fatal("the connection was never cut")
	}
	if st.Connections < 2 || st.Resent < 1 || st.Stored != len(frags) {
		t.Errorf("stats %+v: want a second connection, a resent fragment and all %d stored", st, len(frags))
	}
	got := consumeAll(t, m.client, "cut")
	byTimecode := map[int64][]*mkv.Fragment{}
	for _, f := range got {
		pt := producerMillis(t, f)
		byTimecode[pt] = append(byTimecode[pt], f)
	}
	for i, f := range frags {
		copies := byTimecode[f.Timecode]
		if len(copies) == 0 {
			t.Errorf("fragment %d (timecode %d) not stored", i, f.Timecode)
		}
		for _, c := range copies {
			if len(c.Frames) != len(f.Frames) {
				t.Errorf("fragment %d stored with %d frames, sent %d", i, len(c.Frames), len(f.Frames))
			}
		}
		delete(byTimecode, f.Timecode)
	}
	if len(byTimecode) != 0 {
		t.Errorf("stored fragments with unknown producer timestamps: %v", byTimecode)
	}
	if len(got) > len(frags) {
		t.Logf("%d duplicate(s) stored (at-least-once)", len(got)-len(frags))
	}
}

// A connection that goes silent after its 200 (a frozen server, a middlebox that dropped the
// flow while TCP stays up) is given up after StalenessTimeout with fragments waiting for their
// ACK, and the producer goes on on a new one. Before, it waited for ACKs forever: Close hung.
func TestProducerStaleConnection(t *testing.T) {
	t.Parallel()
	var puts atomic.Int32
	m := startMedia(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/putMedia") && puts.Add(1) == 1 {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				_, _ = io.Copy(io.Discard, r.Body) // reads on, answers nothing
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	m.createStream(t, "silent", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p, err := NewProducer(m.client, ProducerConfig{Stream: "silent", StalenessTimeout: time.Second, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(ctx, f); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v (PutMedia requests: %d)", err, puts.Load())
	}
	if st := p.Stats(); st.Connections < 2 || st.Stored != len(frags) {
		t.Errorf("stats %+v: want a second connection and all %d stored", st, len(frags))
	}
	if got := consumeAll(t, m.client, "silent"); len(got) != len(frags) {
		t.Errorf("%d fragments stored, want %d", len(got), len(frags))
	}
}

func TestProducerErrors(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	frags := clipFragments(t, "h264.mkv", time.Second)

	t.Run("missing stream", func(t *testing.T) {
		p, err := NewProducer(m.client, ProducerConfig{Stream: "nope"})
		if err != nil {
			t.Fatal(err)
		}
		_ = p.Send(t.Context(), frags[0]) // may or may not fail yet
		err = p.Close(t.Context())
		var pe *ProducerError
		var ae smithy.APIError
		if !errors.As(err, &pe) || !errors.As(err, &ae) || ae.ErrorCode() != "ResourceNotFoundException" {
			t.Fatalf("Close = %v, want a ProducerError carrying ResourceNotFoundException", err)
		}
	})

	t.Run("media error fails one fragment", func(t *testing.T) {
		m.createStream(t, "bad", 24)
		// The second fragment goes back in time: ERROR 4004 for it; the others are stored.
		back := *frags[1]
		back.Timecode = frags[0].Timecode - 5000
		back.Frames = append([]mkv.Frame(nil), frags[1].Frames...)
		for i := range back.Frames {
			back.Frames[i].Timecode -= frags[1].Timecode - back.Timecode
		}
		in := []*mkv.Fragment{frags[0], &back, frags[2], frags[3]}
		var acks ackLog
		st, err := produce(t, m.client, ProducerConfig{Stream: "bad", OnAck: acks.add, RetryBackoff: time.Millisecond}, in)
		var pe *ProducerError
		if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Err != nil {
			t.Fatalf("Close = %v, want one failed fragment", err)
		}
		var ackErr *AckErr
		if f := pe.Failed[0]; f.Timecode != back.Timecode || !errors.As(f.Err, &ackErr) || ackErr.Ack.ErrorID != 4004 || ackErr.Retryable() {
			t.Errorf("failure %+v, want ERROR 4004 for timecode %d", f, back.Timecode)
		}
		if !strings.Contains(err.Error(), "timecode is lower than the previous") {
			t.Errorf("error %q does not explain the ack", err)
		}
		if st.Stored != 3 || st.Failed != 1 {
			t.Errorf("stats %+v, want 3 stored and 1 failed", st)
		}
		if got := consumeAll(t, m.client, "bad"); len(got) != 3 {
			t.Errorf("%d fragments stored, want 3", len(got))
		}
	})
}

// cutResponse aborts the first GetMedia response after n bytes.
func cutResponse(n int) func(http.Handler) http.Handler {
	var done atomic.Bool
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMedia" && done.CompareAndSwap(false, true) {
				w = &testutil.CutWriter{ResponseWriter: w, Left: n}
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestConsumerResumesAfterCut(t *testing.T) {
	t.Parallel()
	m, frags := startCam(t, cutResponse(20_000))
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []*mkv.Fragment
	for {
		f, err := cons.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	if len(got) != len(frags) {
		t.Fatalf("%d fragments after the resume, want %d exactly once", len(got), len(frags))
	}
	for i, f := range got {
		if pt := producerMillis(t, f); pt != frags[i].Timecode {
			t.Errorf("fragment %d: producer timestamp %d, want %d", i, pt, frags[i].Timecode)
		}
	}
	if n := countFrames(got)[1]; n != 100 {
		t.Errorf("%d frames, want 100", n)
	}
	last, _ := got[len(got)-1].Tag(mkv.TagFragmentNumber)
	if cons.ContinuationToken() != last {
		t.Errorf("continuation token %q, want the last fragment number %q", cons.ContinuationToken(), last)
	}
}

func TestConsumerErrors(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "cam", 24)
	cases := []struct {
		name   string
		stream string
		sel    StartSelector
		code   string
		status int
	}{
		// GetDataEndpoint fails first, with the SDK's typed error.
		{"missing stream", "nope", StartSelector{Type: StartEarliest}, "ResourceNotFoundException", 0},
		{"missing fragment", "cam", StartSelector{Type: StartFragmentNumber, AfterFragmentNumber: "91343852333000000000000000000000000000000000099"}, "ResourceNotFoundException", 404},
		{"bad fragment number", "cam", StartSelector{Type: StartFragmentNumber, AfterFragmentNumber: "12x"}, "InvalidArgumentException", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cons, err := NewConsumer(m.client, ConsumerConfig{Stream: tc.stream, Start: tc.sel, NoFollow: true})
			if err != nil {
				t.Fatal(err)
			}
			_, err = cons.Next(t.Context())
			if tc.status != 0 {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Code != tc.code || ae.Status != tc.status || ae.Op != "GetMedia" {
					t.Fatalf("Next = %v, want an APIError %s (%d)", err, tc.code, tc.status)
				}
			}
			var se smithy.APIError
			if !errors.As(err, &se) || se.ErrorCode() != tc.code {
				t.Errorf("not a smithy.APIError with code %s", tc.code)
			}
			if _, err2 := cons.Next(t.Context()); err2 != err {
				t.Errorf("error not sticky: %v", err2)
			}
		})
	}
	if err := (StartSelector{Type: "LATER"}).Validate(); err == nil {
		t.Error("bad selector type accepted")
	}
	if _, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartServerTimestamp}}); err == nil {
		t.Error("SERVER_TIMESTAMP without a timestamp accepted")
	}
}

// headerSignal closes ch when a GetMedia response sends its 200 header: by then kvs has
// subscribed the request to new fragments and chosen where NOW starts.
func headerSignal(ch chan struct{}) func(http.Handler) http.Handler {
	var once sync.Once
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMedia" {
				w = &headerWriter{ResponseWriter: w, fn: func() { once.Do(func() { close(ch) }) }}
			}
			h.ServeHTTP(w, r)
		})
	}
}

type headerWriter struct {
	http.ResponseWriter
	fn func()
}

func (w *headerWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if code == http.StatusOK {
		w.fn()
	}
}

func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestConsumerNowSeesLiveFragments(t *testing.T) {
	t.Parallel()
	subscribed := make(chan struct{})
	m := startMedia(t, headerSignal(subscribed), nil)
	m.createStream(t, "live", 24)
	old := clipFragments(t, "h264.mkv", time.Second)
	if _, err := produce(t, m.client, ProducerConfig{Stream: "live"}, old[:1]); err != nil {
		t.Fatal(err) // a fragment from before the request, which NOW must not deliver
	}
	frags := old[1:]
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "live"}) // NOW, following
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	type result struct {
		f   []*mkv.Fragment
		err error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		for len(r.f) < len(frags) {
			f, err := cons.Next(t.Context())
			if err != nil {
				r.err = err
				break
			}
			r.f = append(r.f, f)
		}
		res <- r
	}()
	<-subscribed
	if _, err := produce(t, m.client, ProducerConfig{Stream: "live"}, frags); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i, f := range r.f {
		if pt := producerMillis(t, f); pt != frags[i].Timecode {
			t.Errorf("live fragment %d: producer timestamp %d, want %d", i, pt, frags[i].Timecode)
		}
	}
	if n, want := countFrames(r.f)[1], countFrames(frags)[1]; n != want {
		t.Errorf("%d live frames, want %d", n, want)
	}
}

// A NOW consumer whose first connection ends before any fragment (a dropped connection, a
// proxy's idle cut) reconnects from the server time of its first answer: what was published
// while it waited to reconnect comes, not only what comes after the reconnect. Before, it sent
// NOW again and stepped over those fragments.
func TestConsumerNowReconnectBeforeFirstFragment(t *testing.T) {
	t.Parallel()
	var gets atomic.Int32
	firstEnded := make(chan struct{})
	m := startMedia(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/getMedia") && gets.Add(1) == 1 {
				w.Header().Set("Content-Type", "video/webm")
				w.WriteHeader(http.StatusOK) // then the response ends: no fragment
				close(firstEnded)
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	m.createStream(t, "live", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "live", RetryBackoff: time.Second}) // NOW, following
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := make(chan *mkv.Fragment, 1)
	go func() {
		f, err := cons.Next(t.Context())
		if err != nil {
			t.Error(err)
		}
		got <- f
	}()
	<-firstEnded
	// While the consumer waits to reconnect, a fragment is stored.
	if _, err := produce(t, m.client, ProducerConfig{Stream: "live"}, frags[:1]); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-got:
		if f == nil || producerMillis(t, f) != frags[0].Timecode {
			t.Fatalf("got %v, want the fragment stored while the consumer reconnected", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the fragment stored while the consumer reconnected never came (%d GetMedia requests)", gets.Load())
	}
}

// TestConsumerFollowsQuietStream follows a stream whose server ends every GetMedia answer after
// 30 ms without a new fragment (GetMediaIdleTimeout), far more times in a row than MaxAttempts: the
// quiet ends are not failures, and the fragment stored after them is delivered.
func TestConsumerFollowsQuietStream(t *testing.T) {
	t.Parallel()
	var gets atomic.Int32
	m := startMediaConfig(t, server.Config{GetMediaIdleTimeout: 30 * time.Millisecond}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/getMedia") {
				gets.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	m.createStream(t, "quiet", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "quiet", MaxAttempts: 2, RetryBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := make(chan error, 1)
	go func() {
		f, err := cons.Next(t.Context())
		if err == nil && producerMillis(t, f) != frags[0].Timecode {
			err = fmt.Errorf("got the fragment of producer time %d, want %d", producerMillis(t, f), frags[0].Timecode)
		}
		got <- err
	}()
	for gets.Load() < 8 { // four times MaxAttempts quiet answers
		select {
		case err := <-got:
			t.Fatalf("Next returned %v after %d quiet GetMedia answers, before any fragment was stored", err, gets.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := produce(t, m.client, ProducerConfig{Stream: "quiet"}, frags[:1]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the fragment stored after %d quiet answers never came", gets.Load())
	}
}

// readFaultStore fails one payload read (Open or AppendPayload), the failAt-th (or, with always,
// every one), with an error the server answers mid-stream with an error chunk 5000 (a disk or a
// cluster backend failing).
type readFaultStore struct {
	store.Store
	failAt int32
	always bool
	reads  atomic.Int32
}

func (s *readFaultStore) AppendPayload(ctx context.Context, stream string, n uint64, b []byte) ([]byte, store.FragmentMeta, error) {
	if s.reads.Add(1) == s.failAt || s.always {
		return b, store.FragmentMeta{}, errors.New("read: input/output error")
	}
	return s.Store.AppendPayload(ctx, stream, n, b)
}

func (s *readFaultStore) Open(ctx context.Context, stream string, n uint64) (io.ReadCloser, store.FragmentMeta, error) {
	if s.reads.Add(1) == s.failAt || s.always {
		return nil, store.FragmentMeta{}, errors.New("read: input/output error")
	}
	return s.Store.Open(ctx, stream, n)
}

// An error chunk for a server-side failure (5000 INTERNAL_ERROR) is not the end of the stream: the
// consumer reconnects from its continuation token, as after a broken connection or an HTTP 5xx,
// and gets every fragment once. (It returned the error chunk as final: a following reader ended
// for good on a read error of a moment.)
func TestConsumerRetriesServerErrorChunk(t *testing.T) {
	t.Parallel()
	p, frags := startCam(t, nil)
	// A second server on the same store: its live buffer is empty, so GetMedia reads every
	// fragment from the store, and the third read fails.
	m := startMediaConfig(t, server.Config{Store: &readFaultStore{Store: p.store, failAt: 3}}, nil, nil)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []int64
	for {
		f, err := cons.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d fragments: %v", len(got), err)
		}
		got = append(got, producerMillis(t, f))
	}
	var want []int64
	for _, f := range frags {
		want = append(want, f.Timecode)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("fragments at producer times %v, want %v", got, want)
	}

	// A failure that stays ends the consumer after MaxAttempts requests, with the error chunk.
	fs := &readFaultStore{Store: p.store, always: true}
	m = startMediaConfig(t, server.Config{Store: fs}, nil, nil)
	cons, err = NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true,
		MaxAttempts: 3, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var ce *ChunkError
	if _, err := cons.Next(t.Context()); !errors.As(err, &ce) || ce.ID != 5000 {
		t.Fatalf("Next with every read failing: %v, want the error chunk 5000", err)
	}
	if n := fs.reads.Load(); n != 3 {
		t.Errorf("%d reads, want one per request, 3", n)
	}
}

func TestListFragmentsPaging(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "cam", 24)
	frags := clipFragments(t, "h264.mkv", 500*time.Millisecond)
	if len(frags) < 4 {
		t.Fatalf("only %d fragments", len(frags))
	}
	if _, err := produce(t, m.client, ProducerConfig{Stream: "cam"}, frags); err != nil {
		t.Fatal(err)
	}
	for _, page := range []int{1, 3, 1000} {
		list, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam", PageSize: page})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(frags) {
			t.Fatalf("page size %d: %d fragments, want %d", page, len(list), len(frags))
		}
		for i, f := range list {
			if i > 0 && CompareFragmentNumbers(list[i-1].FragmentNumber, f.FragmentNumber) >= 0 {
				t.Errorf("not sorted at %d", i)
			}
			if got := f.ProducerTimestamp.UnixMilli(); got != frags[i].Timecode {
				t.Errorf("fragment %d producer timestamp %d, want %d", i, got, frags[i].Timecode)
			}
			if f.SizeBytes <= 0 || f.Length <= 0 {
				t.Errorf("fragment %d: size %d, length %v", i, f.SizeBytes, f.Length)
			}
		}
	}
	// Enough stops the paging before the next page, and is not asked after the last one.
	var asked []int
	enough := func(listed []FragmentInfo) bool { asked = append(asked, len(listed)); return len(listed) >= 2 }
	if list, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam", PageSize: 1, Enough: enough}); err != nil || len(list) != 2 {
		t.Errorf("page size 1 until 2 listed: %d fragments, %v; want 2", len(list), err)
	}
	if list, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam", Enough: enough}); err != nil || len(list) != len(frags) {
		t.Errorf("one page: %d fragments, %v; want %d", len(list), err, len(frags))
	}
	if !slices.Equal(asked, []int{1, 2}) {
		t.Errorf("Enough asked with %v fragments listed, want [1 2] (never after the last page)", asked)
	}
	// Producer-time range: the middle fragments only (inclusive ends).
	mid, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam", Type: ProducerTimestamp,
		Start: time.UnixMilli(frags[1].Timecode), End: time.UnixMilli(frags[2].Timecode)})
	if err != nil || len(mid) != 2 {
		t.Fatalf("range: %d fragments, %v; want 2", len(mid), err)
	}
	// GetMediaForFragmentList returns them in request order.
	body, err := m.client.GetMediaForFragmentList(t.Context(), "cam", []string{mid[1].FragmentNumber, mid[0].FragmentNumber})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	fr := mkv.NewFragmentReader(body)
	var order []string
	for {
		f, err := fr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.Tag(mkv.TagFragmentNumber)
		order = append(order, n)
	}
	if len(order) != 2 || order[0] != mid[1].FragmentNumber || order[1] != mid[0].FragmentNumber {
		t.Errorf("order %v", order)
	}
	if _, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "nope"}); err == nil {
		t.Error("ListFragments of a missing stream succeeded")
	}
}

func TestCompareFragmentNumbers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{{"1", "2", -1}, {"10", "9", 1}, {"007", "7", 0}, {"91343852333000000000000000000000000000000000010", "91343852333000000000000000000000000000000000009", 1}} {
		got := CompareFragmentNumbers(tc.a, tc.b)
		if (got < 0) != (tc.want < 0) || (got > 0) != (tc.want > 0) {
			t.Errorf("Compare(%s, %s) = %d", tc.a, tc.b, got)
		}
	}
}

func TestAPIErrorParsing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, header, body string
		status             int
		code, msg          string
	}{
		{"header and Message", "ResourceNotFoundException:https://docs", `{"Message":"not found"}`, 404, "ResourceNotFoundException", "not found"},
		{"body type only", "", `{"__type":"com.amazon#InvalidArgumentException","message":"bad"}`, 400, "InvalidArgumentException", "bad"},
		{"no code", "", "oops", 502, "Bad Gateway", "oops"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if tc.header != "" {
				rec.Header().Set("X-Amzn-ErrorType", tc.header)
			}
			rec.WriteHeader(tc.status)
			rec.WriteString(tc.body)
			e := newAPIError("GetMedia", rec.Result())
			if e.Code != tc.code || e.Message != tc.msg || e.Status != tc.status {
				t.Errorf("got %+v", e)
			}
		})
	}
}

// TestProducerTrackChange sends H.264 fragments, then H.265 ones: the producer starts a new
// connection with the new Tracks, and a reader sees both codecs with every frame.
func TestProducerTrackChange(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "switch", 24)
	h264 := clipFragments(t, "h264.mkv", time.Second)
	h265 := clipFragments(t, "h265.mkv", time.Second)
	shift := h264[len(h264)-1].Timecode + 1000 - h265[0].Timecode
	for _, f := range h265 {
		f.Timecode += shift
		for i := range f.Frames {
			f.Frames[i].Timecode += shift
		}
	}
	st, err := produce(t, m.client, ProducerConfig{Stream: "switch"}, append(append([]*mkv.Fragment(nil), h264...), h265...))
	if err != nil {
		t.Fatal(err)
	}
	if st.Connections != 2 || st.Stored != len(h264)+len(h265) {
		t.Errorf("stats %+v, want 2 connections and %d stored", st, len(h264)+len(h265))
	}
	got := consumeAll(t, m.client, "switch")
	codecs := map[string]int{}
	for _, f := range got {
		codecs[f.Tracks[0].CodecID] += len(f.Frames)
	}
	if codecs["V_MPEG4/ISO/AVC"] != 100 || codecs["V_MPEGH/ISO/HEVC"] != 50 {
		t.Errorf("frames per codec %v, want 100 H.264 and 50 H.265", codecs)
	}
}

// TestConsumerIdleTimeoutEndsNoFollow strips x-kvs-no-follow, as real KVS ignores it: the consumer
// still ends at the live edge, after IdleTimeout without data.
func TestConsumerIdleTimeoutEndsNoFollow(t *testing.T) {
	t.Parallel()
	strip := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del(NoFollowHeader)
			h.ServeHTTP(w, r)
		})
	}
	m, frags := startCam(t, strip)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true,
		IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	n := countFragments(t, cons, nil)
	if n != len(frags) {
		t.Errorf("%d fragments, want %d", n, len(frags))
	}
}

// TestConsumerSlowCallerNoFollow: IdleTimeout is the server's silence, not the caller's time between
// two Next calls. A NoFollow read by a caller that takes longer than IdleTimeout per fragment (a
// player on the pipe of get-media that reads at playback speed) got every fragment, not the first
// and an early io.EOF.
func TestConsumerSlowCallerNoFollow(t *testing.T) {
	t.Parallel()
	m, frags := startCam(t, nil)
	const idle = 100 * time.Millisecond
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true, IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	n := countFragments(t, cons, func() { time.Sleep(3 * idle) }) // the caller is busy with each fragment
	if n != len(frags) {
		t.Errorf("%d fragments, want %d", n, len(frags))
	}
}

// countFragments reads cons to its io.EOF and returns how many fragments came, calling each (when
// not nil) after each one; an error fails the test.
func countFragments(t *testing.T, cons *Consumer, each func()) int {
	t.Helper()
	n := 0
	for {
		_, err := cons.Next(t.Context())
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("after %d fragments: %v", n, err)
		}
		n++
		if each != nil {
			each()
		}
	}
}
