package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

func TestMain(m *testing.M) {
	testutil.IsolateAWS()
	os.Exit(m.Run())
}

// TestRun drives 3 streams for 1.28 s against a kvs server with an FS store and checks the
// counts. No timing assertions: latencies depend on the machine. Each stream sends 4 fragments of
// 320 ms at 1.5625 Mbit/s: 12 fragments of 62500 bytes, as the 2 s of 500 ms fragments at
// 1 Mbit/s this test sent before, in 0.7 s less (the run waits out Duration in real time); the
// last fragments still end in the run's second second.
func TestRun(t *testing.T) {
	t.Parallel()
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	c, err := client.New(t.Context(), client.Config{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	// The steady-state window opens once, after every producer started, and closes once, after
	// the last fragment was sent and before Run returns.
	var window []string
	var windowMu sync.Mutex
	var opened, closed time.Time
	res, err := Run(t.Context(), Config{Client: c, Streams: 3, Bitrate: 1_562_500,
		FragmentDuration: 320 * time.Millisecond, Duration: 1280 * time.Millisecond, DeleteStreams: true,
		Window: func(end bool) {
			windowMu.Lock()
			defer windowMu.Unlock()
			window = append(window, fmt.Sprint(end))
			if end {
				closed = time.Now()
			} else {
				opened = time.Now()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	windowMu.Lock()
	if !slices.Equal(window, []string{"false", "true"}) || !closed.After(opened) {
		t.Errorf("Window calls %v (opened %v, closed %v), want false then true", window, opened, closed)
	}
	windowMu.Unlock()
	t.Logf("%+v", res)
	if res.Errors != 0 {
		t.Fatalf("errors %v: %q", res.ErrorsByKind, res.FirstErrors)
	}
	if res.Sent != 12 || res.Fragments != 12 || res.Delivered != 12 {
		t.Errorf("sent %d, persisted %d, delivered %d; want 12 each", res.Sent, res.Fragments, res.Delivered)
	}
	// 1.5625 Mbit/s × 0.32 s = 62500 bytes per fragment, give or take rounding of the frame sizes.
	if per := res.Bytes / 12; per < 62000 || per > 62500 {
		t.Errorf("%d bytes per fragment, want about 62500", per)
	}
	if res.PersistedAck.Max <= 0 || res.Delivery.Max <= 0 || res.PersistedAck.P50 > res.PersistedAck.Max {
		t.Errorf("latencies %+v %+v", res.PersistedAck, res.Delivery)
	}
	// The per-second breakdown covers every persisted fragment, in order of the seconds.
	total, prev := 0, -1
	for _, sec := range res.BySecond {
		if sec.Second <= prev || sec.Fragments <= 0 || sec.PersistedP99 <= 0 || sec.DeliveryP99 <= 0 {
			t.Errorf("by second: %+v after second %d", sec, prev)
		}
		total, prev = total+sec.Fragments, sec.Second
	}
	if total != res.Fragments || len(res.BySecond) < 2 {
		t.Errorf("by second: %d fragments in %d seconds, want %d", total, len(res.BySecond), res.Fragments)
	}
	// Every producer connected before the run (its set-up measured apart).
	if res.Connect.Max <= 0 || res.Connect.P50 > res.Connect.Max {
		t.Errorf("connect latency %+v", res.Connect)
	}
	streams, err := st.ListStreams(t.Context())
	if err != nil || len(streams) != 0 {
		t.Errorf("streams left: %v, %v", streams, err)
	}
}

func TestFrameSizes(t *testing.T) {
	t.Parallel()
	cfg := Config{Bitrate: 2_000_000, FragmentDuration: time.Second, FPS: 30, KeyframeRatio: 9}
	key, delta := frameBytes(cfg, true), frameBytes(cfg, false)
	if total := key + 29*delta; total < 249_900 || total > 250_000 {
		t.Errorf("fragment %d bytes, want 250000", total)
	}
	if r := float64(key) / float64(delta); r < 8.9 || r > 9.1 {
		t.Errorf("keyframe/delta = %v", r)
	}
}

// TestWalkChunks checks the lean GetMedia walker against chunks written by mkv, and that an
// error chunk ends it with an error.
func TestWalkChunks(t *testing.T) {
	t.Parallel()
	var in []byte
	tracks := []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: codecPrivate}}
	for _, tc := range []int64{1000, 2000, 300000} {
		in = mkv.AppendEBMLHeader(in, "matroska")
		in = mkv.AppendSegmentStart(in)
		in = mkv.AppendInfo(in, mkv.DefaultTimecodeScale, "")
		in = mkv.AppendTracks(in, tracks)
		in = mkv.AppendTags(in, mkv.SimpleTag{Name: mkv.TagFragmentNumber, Value: fmt.Sprint(tc * 7)})
		var err error
		in, err = mkv.AppendCluster(in, tc, []mkv.Frame{{Track: 1, Timecode: tc, Keyframe: true, Data: make([]byte, 70000)},
			{Track: 1, Timecode: tc + 33, Data: make([]byte, 100)}})
		if err != nil {
			t.Fatal(err)
		}
		in = mkv.AppendTags(in, mkv.SimpleTag{Name: mkv.TagContinuationToken, Value: "1"})
	}
	var got []chunkInfo
	if err := walkChunks(bytes.NewReader(in), func(c chunkInfo) { got = append(got, c) }); err != nil {
		t.Fatal(err)
	}
	// Frames of 70000 and 100 bytes: the consumer counts every byte against its fragment.
	want := []chunkInfo{{1000, "7000", 70100}, {2000, "14000", 70100}, {300000, "2100000", 70100}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	in = mkv.AppendEBMLHeader(in, "matroska")
	in = mkv.AppendSegmentStart(in)
	in = mkv.AppendTags(in, mkv.SimpleTag{Name: mkv.TagErrorID, Value: "4000"})
	if err := walkChunks(bytes.NewReader(in), func(chunkInfo) {}); !errors.Is(err, errChunk) {
		t.Errorf("error chunk: %v", err)
	}
	if err := walkChunks(bytes.NewReader(in[:len(in)/2]), func(chunkInfo) {}); err == nil {
		t.Error("truncated input: no error")
	}
}

func TestParseBitrate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"2Mbps", 2_000_000}, {"500kbps", 500_000}, {"2M", 2_000_000}, {"1.5 Mbit/s", 1_500_000}, {"64000", 64_000},
	} {
		got, err := ParseBitrate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "fast", "-1Mbps", "0"} {
		if _, err := ParseBitrate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Fragments whose last byte went out during the warm-up count for the totals but not for the
// latency figures.
func TestResultWarmup(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	r := &run{cfg: Config{Warmup: 5 * time.Second}, t0: t0, errs: map[string]int{}}
	s := &stream{r: r, frags: map[int64]*fragRecord{}, start: t0, end: t0.Add(10 * time.Second)}
	for i := range 10 {
		sent := t0.Add(time.Duration(i+1) * time.Second)
		lat := 5 * time.Millisecond
		if i < 4 { // sent in the first 5 s: slow, as a server warming up is
			lat = 2 * time.Second
		}
		s.frags[int64(i)] = &fragRecord{size: 1000, number: fmt.Sprint(i + 1), lastByte: sent, persisted: sent.Add(lat), delivered: sent.Add(lat / 2),
			deliveredNumber: fmt.Sprint(i + 1), deliveredBytes: 1000}
	}
	res := r.result([]*stream{s})
	if res.Fragments != 10 || res.Delivered != 10 || res.Bytes != 10000 || res.Errors != 0 {
		t.Errorf("totals %+v, want all 10 fragments", res)
	}
	if res.PersistedAck.Max != 5 || res.Delivery.Max != 2.5 {
		t.Errorf("latencies %+v / %+v, want only the fragments after the warm-up (5 ms, 2.5 ms)", res.PersistedAck, res.Delivery)
	}
	r.cfg.Warmup = 0
	if res := r.result([]*stream{s}); res.PersistedAck.Max != 2000 {
		t.Errorf("without warm-up: max %v ms, want 2000", res.PersistedAck.Max)
	}
	// A chunk that is another fragment's, or short of bytes, is an error.
	s.frags[3].deliveredNumber = "9"
	s.frags[4].deliveredBytes = 999
	if res := r.result([]*stream{s}); res.Errors != 2 || res.ErrorsByKind["get-media-wrong-fragment-number"] != 1 || res.ErrorsByKind["get-media-wrong-size"] != 1 {
		t.Errorf("mismatched chunks: errors %v", res.ErrorsByKind)
	}
}

// TestConsumeChecksEveryChunk serves a GetMedia response with a fragment delivered twice and a
// chunk of a fragment the stream never sent: the consumer's checks must count both, since every
// delivered chunk is to be checked against what was sent, not only the first of each fragment.
func TestConsumeChecksEveryChunk(t *testing.T) {
	t.Parallel()
	tracks := []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: codecPrivate}}
	var body []byte
	for _, tc := range []int64{1000, 1000, 5000} { // 1000 twice, 5000 never sent
		body = mkv.AppendEBMLHeader(body, "matroska")
		body = mkv.AppendSegmentStart(body)
		body = mkv.AppendInfo(body, mkv.DefaultTimecodeScale, "")
		body = mkv.AppendTracks(body, tracks)
		body = mkv.AppendTags(body, mkv.SimpleTag{Name: mkv.TagFragmentNumber, Value: fmt.Sprint(tc * 7)})
		var err error
		body, err = mkv.AppendCluster(body, tc, []mkv.Frame{{Track: 1, Timecode: tc, Keyframe: true, Data: make([]byte, 1000)}})
		if err != nil {
			t.Fatal(err)
		}
		body = mkv.AppendTags(body, mkv.SimpleTag{Name: mkv.TagContinuationToken, Value: "1"})
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "video/webm")
		_, _ = w.Write(body)
	}))
	t.Cleanup(ts.Close)
	c, err := client.New(t.Context(), client.Config{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	r := &run{cfg: Config{Client: c}, hc: ts.Client(), t0: t0, errs: map[string]int{}}
	s := &stream{r: r, name: "s", getURL: ts.URL + "/getMedia", frags: map[int64]*fragRecord{
		1000: {size: 1000, number: "7000", lastByte: t0, persisted: t0},
	}, start: t0, end: t0, got: make(chan struct{}, 1)}
	ready := make(chan error, 1)
	s.consume(t.Context(), ready)
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	res := r.result([]*stream{s})
	if res.Delivered != 1 || res.ErrorsByKind["get-media-duplicate-chunk"] != 1 || res.ErrorsByKind["get-media-unexpected-chunk"] != 1 || res.Errors != 2 {
		t.Errorf("delivered %d, errors %d %v; want 1 delivered, a duplicate and an unexpected chunk", res.Delivered, res.Errors, res.ErrorsByKind)
	}
}

// TestWindowEndsBeforeAcks: the steady-state window (where kvs bench samples the server's CPU)
// closes when the last fragment has been sent, not after the PutMedia responses have ended. The
// server here holds each PutMedia response open, its acks sent, until the window closes: were the
// window to wait for the responses, the uploads would outlast the drain timeout.
func TestWindowEndsBeforeAcks(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Config{Store: store.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		srv.ServeHTTP(w, req)
		if req.URL.Path == "/putMedia" {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
	}))
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }); ts.Close(); srv.Close() })
	c, err := client.New(t.Context(), client.Config{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), Config{Client: c, Streams: 2, Bitrate: 100_000, FragmentDuration: 200 * time.Millisecond,
		Duration: 600 * time.Millisecond, NoConsumers: true, DrainTimeout: 3 * time.Second,
		Window: func(end bool) {
			if end {
				releaseOnce.Do(func() { close(release) })
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Fragments != 6 {
		t.Errorf("errors %v %q, %d fragments persisted; want none, 6", res.ErrorsByKind, res.FirstErrors, res.Fragments)
	}
}

// TestDurationOfConnectedStreams: a producer that could not connect streams nothing, and must
// not count in the mean streaming time (the figure ingest_mbps divides by): with one stream of
// two refused, the duration halved and the ingest rate doubled.
func TestDurationOfConnectedStreams(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Config{Store: store.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/putMedia" && strings.HasSuffix(req.Header.Get("x-amzn-stream-name"), "-1") {
			w.Header().Set("Connection", "close")
			http.Error(w, "refused", http.StatusServiceUnavailable)
			w.(http.Flusher).Flush() // the producer waits for the response before it streams
			return
		}
		srv.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { ts.Close(); srv.Close() })
	c, err := client.New(t.Context(), client.Config{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Client: c, Streams: 2, Bitrate: 100_000, FragmentDuration: 320 * time.Millisecond,
		Duration: 1280 * time.Millisecond, NoConsumers: true}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorsByKind["put-media"] != 1 || res.Fragments != 4 {
		t.Errorf("errors %v %q, %d fragments; want the refused stream's connection, 4 fragments", res.ErrorsByKind, res.FirstErrors, res.Fragments)
	}
	// The stream that streamed wrote its last frame no earlier than its capture time: its
	// streaming time is at least Duration less one frame, whatever the machine's speed.
	if min := cfg.Duration - cfg.FragmentDuration; res.Duration < min {
		t.Errorf("duration %v, want at least %v (the one stream that streamed)", res.Duration, min)
	}
}
