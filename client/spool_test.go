package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// spoolPayload is a test record: a stream header and a body that say which record they are.
func spoolPayload(i, size int) (header, body []byte) {
	header = []byte(fmt.Sprintf("header-%d", i%2))
	body = bytes.Repeat([]byte{byte(i)}, size)
	copy(body, fmt.Sprintf("record %d;", i))
	return header, body
}

func openTestSpool(t *testing.T, dir string, maxBytes, segment int64, notices *[]string) *Spool {
	t.Helper()
	var mu sync.Mutex
	s, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "cam", MaxBytes: maxBytes, segmentBytes: segment, Notice: func(m string) {
		mu.Lock()
		defer mu.Unlock()
		if notices != nil {
			*notices = append(*notices, m)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll hands out every record the spool has now (it is sealed first) and returns their
// sequence numbers, checking each one's bytes.
func readAll(t *testing.T, s *Spool, size int) []uint64 {
	t.Helper()
	s.seal()
	var seqs []uint64
	for {
		rec, _, err := s.next(t.Context())
		if errors.Is(err, io.EOF) {
			return seqs
		}
		if err != nil {
			t.Fatal(err)
		}
		i := int(rec.Timecode)
		h, b := spoolPayload(i, size)
		if !bytes.Equal(rec.Header, h) || !bytes.Equal(rec.Body, b) || rec.Scale != 1_000_000 {
			t.Fatalf("record %d (seq %d): bytes differ from what was appended", i, rec.Seq)
		}
		bufpool.Put(rec.Body)
		seqs = append(seqs, rec.Seq)
	}
}

func appendN(t *testing.T, s *Spool, from, n, size int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := from; i < from+n; i++ {
		h, b := spoolPayload(i, size)
		seq, err := s.append(h, b, int64(i), 1_000_000)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+spoolSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// oneSegment is the spool's only segment file in dir, or fails the test.
func oneSegment(t *testing.T, dir string) string {
	t.Helper()
	files := spoolFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("segments %v, want one", files)
	}
	return files[0]
}

// Records come back in order and intact; once all are final the segment files are gone (the one
// appended to last at Close), and a spool opened again is empty.
func TestSpoolRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestSpool(t, dir, 0, 10_000, nil)
	seqs := appendN(t, s, 0, 20, 3000) // ~3 records per 10 kB segment
	if len(spoolFiles(t, dir)) < 5 {
		t.Errorf("%d segment files for 60 kB in 10 kB segments", len(spoolFiles(t, dir)))
	}
	if st := s.Stats(); st.Fragments != 20 {
		t.Errorf("stats %+v, want 20 fragments", st)
	}
	got := readAll(t, s, 3000)
	if !slices.Equal(got, seqs) {
		t.Fatalf("next gave %v, appended %v", got, seqs)
	}
	for _, q := range slices.Backward(seqs) { // out of order: nothing goes until the first is final
		if q != seqs[0] && len(spoolFiles(t, dir)) == 0 {
			t.Fatal("segments removed while their first record is not final")
		}
		s.done(q)
	}
	if files := spoolFiles(t, dir); len(files) != 1 {
		t.Errorf("segment files left after every record is final: %v, want the last one only", files)
	}
	if st := s.Stats(); st.Fragments != 0 || st.Bytes > 10_000+3000 {
		t.Errorf("stats %+v, want no fragment, and the last segment", st)
	}
	s.Close()
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("segment files left after Close: %v", files)
	}
	s2 := openTestSpool(t, dir, 0, 10_000, nil)
	if st := s2.Stats(); st.Recovered != 0 {
		t.Errorf("reopened: %+v, want nothing recovered", st)
	}
	if next := appendN(t, s2, 20, 1, 100); next[0] <= seqs[len(seqs)-1] {
		t.Errorf("sequence numbers restarted: %d after %d", next[0], seqs[len(seqs)-1])
	}
}

// After a restart, what was not final is handed out again (at least once: a record final out of
// order comes again too), and nothing final before the acked mark does.
func TestSpoolRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestSpool(t, dir, 0, 10_000, nil)
	seqs := appendN(t, s, 0, 10, 3000)
	readAll(t, s, 3000)
	s.done(seqs[0])
	s.done(seqs[1])
	s.done(seqs[3]) // out of order: only the mark up to seqs[1] is written
	s.Close()

	s2 := openTestSpool(t, dir, 0, 10_000, nil)
	if st := s2.Stats(); st.Recovered != 8 || st.Fragments != 8 || !st.RecoveredFrom.Equal(time.Unix(0, 2e6)) || !st.RecoveredTo.Equal(time.Unix(0, 9e6)) {
		t.Errorf("reopened: %+v, want 8 recovered, from timecode 2 to 9 (ms)", st)
	}
	if got := readAll(t, s2, 3000); !slices.Equal(got, seqs[2:]) {
		t.Errorf("after restart next gave %v, want %v", got, seqs[2:])
	}
}

// A spool whose last record was torn by a crash keeps exactly the whole records before it, for a
// cut at every offset inside the last record.
func TestSpoolTornTail(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	s := openTestSpool(t, base, 0, 1<<20, nil)
	appendN(t, s, 0, 3, 200)
	s.Close()
	seg := oneSegment(t, base)
	whole, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	recSize := len(whole) / 3
	for cut := 2 * recSize; cut < len(whole); cut++ {
		dir := filepath.Join(t.TempDir(), "spool")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{filepath.Base(seg), spoolStream} {
			src, _ := os.ReadFile(filepath.Join(base, name))
			if name != spoolStream {
				src = src[:cut]
			}
			if err := os.WriteFile(filepath.Join(dir, name), src, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var notices []string
		s := openTestSpool(t, dir, 0, 1<<20, &notices)
		st := s.Stats()
		if st.Recovered != 2 || st.Cut != int64(cut-2*recSize) {
			t.Fatalf("cut at %d: %+v, want 2 records kept and %d bytes cut", cut, st, cut-2*recSize)
		}
		if cut > 2*recSize && (len(notices) != 1 || !strings.Contains(notices[0], "whole fragments before it are kept")) {
			t.Fatalf("cut at %d: notices %q", cut, notices)
		}
		if fi, err := os.Stat(filepath.Join(dir, filepath.Base(seg))); err != nil || fi.Size() != int64(2*recSize) {
			t.Fatalf("cut at %d: segment %v, %v; want it truncated to %d", cut, fi, err, 2*recSize)
		}
		if got := readAll(t, s, 200); len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Fatalf("cut at %d: records %v", cut, got)
		}
		s.Close()
	}
}

// A full spool drops its oldest segment to make room, and counts what it dropped.
func TestSpoolFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var notices []string
	s := openTestSpool(t, dir, MinSpoolMaxBytes, 64<<10, &notices)
	const size = 16 << 10 // with the record header: 3 per 64 KiB segment... 4 when they fit
	seqs := appendN(t, s, 0, 40, size)
	st := s.Stats()
	if st.Dropped == 0 || st.Dropped+st.Fragments != 40 || st.Bytes > MinSpoolMaxBytes {
		t.Fatalf("stats %+v: want drops, and dropped + kept = 40 within %d bytes", st, MinSpoolMaxBytes)
	}
	if len(notices) == 0 || !strings.Contains(notices[len(notices)-1], "is full") {
		t.Errorf("notices %q, want one saying the spool is full", notices)
	}
	got := readAll(t, s, size)
	if !slices.Equal(got, seqs[st.Dropped:]) {
		t.Errorf("kept %v, want the newest %v", got, seqs[st.Dropped:])
	}
}

// A record handed out from a segment that is dropped meanwhile is not counted twice, and the
// cursor goes on after the dropped segment.
func TestSpoolDropWhileReading(t *testing.T) {
	t.Parallel()
	s := openTestSpool(t, t.TempDir(), MinSpoolMaxBytes, 64<<10, nil)
	first := appendN(t, s, 0, 2, 16<<10)
	rec, queued, err := s.next(t.Context())
	if err != nil || rec.Seq != first[0] || queued != 1 {
		t.Fatalf("next: %d, %d queued, %v", rec.Seq, queued, err)
	}
	bufpool.Put(rec.Body)
	appendN(t, s, 2, 40, 16<<10)
	s.done(first[0]) // dropped meanwhile: ignored
	st := s.Stats()
	if st.Fragments+st.Dropped != 42 {
		t.Errorf("stats %+v: kept + dropped should be 42", st)
	}
	rec, _, err = s.next(t.Context())
	if err != nil || rec.Seq != uint64(st.Dropped)+1 {
		t.Errorf("next after the drop: seq %d, %v; want %d", rec.Seq, err, st.Dropped+1)
	}
}

func TestSpoolOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestSpool(t, dir, 0, 0, nil)
	appendN(t, s, 0, 1, 100)
	if _, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "cam"}); err == nil || !strings.Contains(err.Error(), "in use by process") {
		t.Errorf("second open: %v, want it in use", err)
	}
	s.Close()
	if _, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "other"}); err == nil || !strings.Contains(err.Error(), `holds 1 fragments of stream "cam"`) {
		t.Errorf("open for another stream: %v", err)
	}
	if _, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "cam", MaxBytes: 1000}); err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Errorf("tiny spool: %v", err)
	}
}

// flakyServer is a kvs server (memory store) that can go down and come back on the same address.
// While down, its port is held (testutil.PortHold): connections are refused, as by a server that
// is gone, and no other socket takes the port (a connect(2) elsewhere in the test binary could
// take one merely left free, and the server could then not come back).
type flakyServer struct {
	t       *testing.T
	addr    string
	handler http.Handler
	store   store.Store
	mu      sync.Mutex
	hs      *http.Server
	done    chan struct{}
	port    *testutil.PortHold // held while down
}

func newFlakyServer(t *testing.T) *flakyServer {
	t.Helper()
	st := store.NewMem()
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	port := testutil.HoldPort(t)
	f := &flakyServer{t: t, addr: port.Addr(), handler: srv, store: st, port: port}
	t.Cleanup(func() { f.down(); srv.Close(); st.Close() })
	// It has stream "cam" (24 h retention), and starts down.
	f.up()
	if _, err := f.client(t).Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(24)}); err != nil {
		t.Fatal(err)
	}
	f.down()
	return f
}

func (f *flakyServer) up() {
	f.t.Helper()
	f.port.Release()
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hs = &http.Server{Handler: f.handler, ReadHeaderTimeout: 5 * time.Second}
	f.done = make(chan struct{})
	go func(hs *http.Server, done chan struct{}) {
		defer close(done)
		_ = hs.Serve(l)
	}(f.hs, f.done)
}

func (f *flakyServer) down() {
	f.mu.Lock()
	hs, done := f.hs, f.done
	f.hs = nil
	f.mu.Unlock()
	if hs != nil {
		hs.Close()
		<-done
		f.port.Hold()
	}
}

func (f *flakyServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(t.Context(), Config{Endpoint: "http://" + f.addr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// shiftedFragments repeats the fragments of a clip n times with timecodes continuing, as a camera
// would send them.
func shiftedFragments(t *testing.T, clip string, n int) []*mkv.Fragment {
	t.Helper()
	base := clipFragments(t, clip, time.Second)
	span := int64(0) // from the first cluster to after the last frame of any track
	for _, f := range base {
		for _, fr := range f.Frames {
			span = max(span, fr.Timecode-base[0].Timecode+40)
		}
	}
	var out []*mkv.Fragment
	for k := 0; len(out) < n; k++ {
		for _, f := range base {
			if len(out) == n {
				break
			}
			g := *f
			g.Timecode += int64(k) * span
			g.Frames = slices.Clone(f.Frames)
			for i := range g.Frames {
				g.Frames[i].Timecode += int64(k) * span
			}
			out = append(out, &g)
		}
	}
	return out
}

// With the endpoint down, Send goes on into the spool without blocking; when the endpoint comes
// back, every fragment is stored once, in order, and the spool ends empty.
func TestProducerSpoolOutage(t *testing.T) {
	t.Parallel()
	fs := newFlakyServer(t)
	fs.up()
	c := fs.client(t)
	frags := shiftedFragments(t, "h264.mkv", 24) // more than MaxInFlight
	dir := t.TempDir()
	sp := openTestSpool(t, dir, 0, 0, nil)
	p, err := NewProducer(c, ProducerConfig{Stream: "cam", Spool: sp, MaxInFlight: 4, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags[:4] {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	// The outage comes between fragments: a fragment the server stored but whose PERSISTED ack
	// the outage cut off is sent again (at least once), and would be stored twice.
	for p.Stats().Stored < 4 {
		select {
		case <-t.Context().Done():
			t.Fatal("the first 4 fragments were not stored")
		case <-time.After(10 * time.Millisecond):
		}
	}
	fs.down()
	for _, f := range frags[4:] {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		if err := p.Send(ctx, f); err != nil {
			t.Fatalf("Send while the endpoint is down: %v (it must go to the spool)", err)
		}
		cancel()
	}
	if st := p.Stats(); st.Spool.Fragments < 20 {
		t.Errorf("stats %+v, want at least the 20 fragments sent while down in the spool", st)
	}
	fs.up()
	if err := p.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st := p.Stats()
	if st.Stored != len(frags) || st.Spool.Fragments != 0 {
		t.Errorf("stats %+v, want all %d stored and an empty spool", st, len(frags))
	}
	sp.Close()
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("segment files left: %v", files)
	}
	got := consumeAll(t, c, "cam")
	checkTimecodes(t, got, frags)
}

// checkTimecodes checks that got holds each of want once, in order, with its frames.
func checkTimecodes(t *testing.T, got, want []*mkv.Fragment) {
	t.Helper()
	var g, w []int64
	for _, f := range got {
		g = append(g, producerMillis(t, f))
	}
	for _, f := range want {
		w = append(w, f.Timecode)
	}
	if !slices.Equal(g, w) {
		t.Fatalf("stored producer timestamps %v, sent %v", g, w)
	}
	if a, b := countFrames(got), countFrames(want); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("frames per track %v, sent %v", a, b)
	}
}

// spoolWhileDown sends frags with a producer on spool sp while fs is down, and returns what
// Close says after 100 ms: they stay in the spool.
func spoolWhileDown(t *testing.T, fs *flakyServer, sp *Spool, frags []*mkv.Fragment) error {
	t.Helper()
	retention := 24
	p, err := NewProducer(fs.client(t), ProducerConfig{Stream: "cam", Spool: sp, RetentionHours: &retention, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	return p.Close(ctx)
}

// A producer that stops with fragments in its spool (a crash, or Close giving up) leaves them there;
// the next producer on the same spool sends them first, then its own, in order.
func TestProducerSpoolRestart(t *testing.T) {
	t.Parallel()
	fs := newFlakyServer(t)
	frags := shiftedFragments(t, "h264_aac.mkv", 12)
	dir := t.TempDir()

	sp := openTestSpool(t, dir, 0, 0, nil)
	var pe *ProducerError
	if err := spoolWhileDown(t, fs, sp, frags[:8]); !errors.As(err, &pe) || pe.Spooled != 8 || len(pe.Failed) != 0 || !strings.Contains(err.Error(), "8 fragment(s) not sent are kept in the spool") {
		t.Fatalf("Close with the endpoint down: %v, want the 8 fragments kept in the spool", err)
	}
	sp.Close()

	fs.up()
	c := fs.client(t)
	sp2 := openTestSpool(t, dir, 0, 0, nil)
	p2, err := NewProducer(c, ProducerConfig{Stream: "cam", Spool: sp2, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags[8:] {
		if err := p2.Send(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := p2.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := p2.Stats(); st.Recovered != 8 || st.Stored != 12 || st.Fragments != 4 {
		t.Errorf("stats %+v: want 8 recovered, 4 sent, 12 stored", st)
	}
	checkTimecodes(t, consumeAll(t, c, "cam"), frags)
}

// A spool too small for an outage keeps the newest fragments: the oldest are dropped, counted,
// and Close reports them.
func TestProducerSpoolFull(t *testing.T) {
	t.Parallel()
	fs := newFlakyServer(t)
	frags := shiftedFragments(t, "h264.mkv", 40) // ~7 KB each
	retention := 24
	sp := openTestSpool(t, t.TempDir(), MinSpoolMaxBytes, 64<<10, nil)
	p, err := NewProducer(fs.client(t), ProducerConfig{Stream: "cam", Spool: sp, RetentionHours: &retention, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	dropped := p.Stats().Spool.Dropped
	if dropped == 0 {
		t.Fatalf("stats %+v: 280 KB in a 256 KiB spool, want drops", p.Stats())
	}
	fs.up()
	c := fs.client(t)
	var pe *ProducerError
	if err := p.Close(t.Context()); !errors.As(err, &pe) || pe.Dropped != dropped || pe.Spooled != 0 || pe.Err != nil {
		t.Fatalf("Close: %v, want %d dropped reported and nothing else", err, dropped)
	}
	// The fragments that were in flight when their segment was dropped may be stored too.
	got := consumeAll(t, c, "cam")
	stored := map[int64]bool{}
	for _, f := range got {
		stored[producerMillis(t, f)] = true
	}
	for i, f := range frags[dropped:] {
		if !stored[f.Timecode] {
			t.Errorf("fragment %d of the newest %d not stored", i, len(frags)-dropped)
		}
	}
	if len(got) > len(frags)-dropped+DefaultMaxInFlight {
		t.Errorf("%d stored, want the newest %d (plus at most those in flight)", len(got), len(frags)-dropped)
	}
}

// With SpoolWait (a file's upload), a spool too small for an outage makes Send wait instead of
// dropping the oldest fragments: nothing is dropped, Send goes on once the endpoint is back, and
// every fragment is stored.
func TestProducerSpoolWait(t *testing.T) {
	t.Parallel()
	fs := newFlakyServer(t)
	frags := shiftedFragments(t, "h264.mkv", 40) // ~7 KB each: 280 KB for a 256 KiB spool
	retention := 24
	waiting := make(chan string, 16)
	sp, err := OpenSpool(SpoolConfig{Dir: t.TempDir(), Stream: "cam", MaxBytes: MinSpoolMaxBytes, segmentBytes: 64 << 10,
		Notice: func(m string) {
			if strings.Contains(m, "waiting for the server") {
				select {
				case waiting <- m:
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	p, err := NewProducer(fs.client(t), ProducerConfig{Stream: "cam", Spool: sp, SpoolWait: true, RetentionHours: &retention, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		for _, f := range frags {
			if err := p.Send(t.Context(), f); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case m := <-waiting:
		t.Logf("notice: %s", m)
	case err := <-sent:
		t.Fatalf("Send of 280 KB into a 256 KiB spool with the endpoint away returned (%v) without waiting; stats %+v", err, p.Stats())
	}
	select {
	case err := <-sent:
		t.Fatalf("Send returned (%v) while the spool was full and the endpoint away", err)
	default:
	}
	if d := p.Stats().Spool.Dropped; d != 0 {
		t.Fatalf("%d fragments dropped while Send waits", d)
	}
	fs.up()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st := p.Stats(); st.Spool.Dropped != 0 || st.Stored != len(frags) {
		t.Errorf("stats %+v: want all %d stored, none dropped", st, len(frags))
	}
	checkTimecodes(t, consumeAll(t, fs.client(t), "cam"), frags)
}

// SpoolRate paces the backlog at a rate of about 5 fragments per second, while the last one (the
// live edge) is not held back. A window of one fragment keeps the backlog in the spool until the
// endpoint is back: the pump took fragments 1 and 2 while they were the newest, and 3 to 10 are
// backlog, of which 4 to 10 wait their turn (7 × 0.2 s).
func TestProducerSpoolRate(t *testing.T) {
	t.Parallel()
	fs := newFlakyServer(t)
	frags := shiftedFragments(t, "h264.mkv", 11)
	retention := 24
	sp := openTestSpool(t, t.TempDir(), 0, 0, nil)
	size := 0
	for _, f := range frags {
		for _, fr := range f.Frames {
			size += len(fr.Data)
		}
	}
	rate := int64(size / len(frags) * 5) // about 5 fragments per second
	c := fs.client(t)
	p, err := NewProducer(c, ProducerConfig{Stream: "cam", Spool: sp, RetentionHours: &retention, SpoolRate: rate, MaxInFlight: 1, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	fs.up()
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Only a lower bound: the pacing must hold the backlog back; how much longer a loaded machine
	// takes is not this test's business (no upper time limits in tests).
	if d := time.Since(start); d < 1300*time.Millisecond {
		t.Errorf("backlog of 8 fragments at 5 per second sent in %v, want at least about 1.4 s", d)
	}
	checkTimecodes(t, consumeAll(t, c, "cam"), frags)
}

// A Notice that asks the spool's Stats (as a status line would) does not deadlock: messages
// raised while the spool's lock is held (the spool full, a segment that cannot be removed, the
// acked mark not written) are delivered once it is let go. Before, the first full spool hung.
func TestSpoolNoticeMayAskStats(t *testing.T) {
	t.Parallel()
	var s *Spool
	var mu sync.Mutex
	var notices []string
	s, err := OpenSpool(SpoolConfig{Dir: t.TempDir(), Stream: "cam", MaxBytes: MinSpoolMaxBytes, segmentBytes: 64 << 10, Notice: func(m string) {
		mu.Lock()
		defer mu.Unlock()
		if s != nil {
			m += fmt.Sprintf(" (%d fragments)", s.Stats().Fragments)
		}
		notices = append(notices, m)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 40 {
			h, b := spoolPayload(i, 16<<10)
			if _, err := s.append(h, b, int64(i), 1e6); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("appends to a full spool deadlocked: Notice was called with the spool's lock held")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notices) == 0 || !strings.Contains(notices[0], "is full") || !strings.Contains(notices[0], "fragments)") {
		t.Errorf("notices %q, want the spool full, told with its Stats", notices)
	}
}

// A spool whose stream file came back empty (created, not yet on disk when the power went) opens
// and records the stream again; its fragments are kept. Before, OpenSpool refused it as
// another stream's ("").
func TestSpoolEmptyStreamFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestSpool(t, dir, 0, 0, nil)
	appendN(t, s, 0, 3, 1000)
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, spoolStream), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openTestSpool(t, dir, 0, 0, nil)
	if st := s2.Stats(); st.Fragments != 3 {
		t.Errorf("stats %+v, want the 3 fragments kept", st)
	}
	if b, err := os.ReadFile(filepath.Join(dir, spoolStream)); err != nil || string(b) != "cam" {
		t.Errorf("stream file %q (%v), want cam", b, err)
	}
}

// Spooled fragments that cannot be read back (a damaged record) are skipped, and Close says so:
// it returned nil as if every fragment had been stored.
func TestProducerSpoolCorruptReported(t *testing.T) {
	t.Parallel()
	frags, _, pe, st, _ := damagedSpool(t, 64<<10, func(segs []string) {
		if len(segs) < 2 {
			t.Fatalf("segments %v, want several", segs)
		}
		flipByte(t, segs[0], func(b []byte) int64 { return int64(len(b) / 2) }) // inside a record's payload
	})
	if pe == nil || pe.Corrupt == 0 || !strings.Contains(pe.Error(), "could not be read back") {
		t.Fatalf("Close: %v, want the skipped fragments reported", pe)
	}
	if st.Stored+pe.Corrupt != len(frags) {
		t.Errorf("stored %d + corrupt %d, want %d", st.Stored, pe.Corrupt, len(frags))
	}
}

// A damaged record header in a segment that is not the last one (a damaged disk: a crash can
// only tear the segment written last) loses the fragments after it in that file, and Close says
// so. Before, OpenSpool cut them as a torn tail and Close returned nil: put-media exited 0 with
// fragments that had been spooled never sent.
func TestProducerSpoolDamagedHeaderReported(t *testing.T) {
	t.Parallel()
	frags, _, pe, st, notices := damagedSpool(t, 64<<10, func(segs []string) {
		if len(segs) < 2 {
			t.Fatalf("segments %v, want several", segs)
		}
		flipByte(t, segs[0], func(b []byte) int64 { return secondRecord(t, b) + 5 }) // the second record's header
	})
	if pe == nil || pe.Corrupt == 0 || !strings.Contains(pe.Error(), "could not be read back") {
		t.Fatalf("Close: %v, want the lost fragments reported", pe)
	}
	if st.Stored+pe.Corrupt != len(frags) {
		t.Errorf("stored %d + corrupt %d, want %d", st.Stored, pe.Corrupt, len(frags))
	}
	if len(notices) == 0 || !strings.Contains(notices[0], "are lost") {
		t.Errorf("notices %q, want one saying fragments are lost", notices)
	}
}

// A damaged record in the segment being appended to skips the rest of it, once: the fragments
// appended after that are read and sent. Before, the next read started that segment again from
// its start, met the damaged record again, and counted every fragment appended to it since as
// corrupt, until the segment was full (64 MiB by default): fragments Send had synced were never
// sent.
func TestSpoolDamageInActiveSegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var notices []string
	s := openTestSpool(t, dir, 0, 1<<20, &notices)
	appendN(t, s, 0, 3, 1000)
	rec, _, err := s.next(t.Context())
	if err != nil || rec.Seq != 1 {
		t.Fatalf("next: %d, %v", rec.Seq, err)
	}
	bufpool.Put(rec.Body)
	// The second record's header: the rest of the segment is unframed.
	flipByte(t, oneSegment(t, dir), func(b []byte) int64 { return int64(len(b)/3 + 5) })
	// A done context: next reads what there is (the damaged record: 2 and 3 are skipped), then
	// says so instead of waiting.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if rec, _, err := s.next(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("next at the damaged record: seq %d, %v; want it skipped", rec.Seq, err)
	}
	later := appendN(t, s, 3, 3, 1000)
	s.seal() // next says io.EOF instead of waiting once everything is handed out
	var got []uint64
	for range later {
		rec, _, err := s.next(t.Context())
		if err != nil {
			t.Fatalf("next after the damage: %v; got %v, want %v (stats %+v)", err, got, later, s.Stats())
		}
		bufpool.Put(rec.Body)
		got = append(got, rec.Seq)
	}
	if !slices.Equal(got, later) {
		t.Errorf("next gave %v after the damage, want %v", got, later)
	}
	if st := s.Stats(); st.Corrupt != 2 || st.Fragments != 4 {
		t.Errorf("stats %+v, want records 2 and 3 corrupt, 4 not final", st)
	}
}

// A damaged record in the middle of the last segment (a damaged disk, not a crash: records were
// appended after it) is not taken for a torn tail: only that fragment is lost, and reported; the
// fragments after it are sent. Before, OpenSpool cut the segment there as if a crash had torn it,
// every later fragment of it was lost, and Close returned nil.
func TestProducerSpoolDamageInLastSegment(t *testing.T) {
	t.Parallel()
	frags, c, pe, _, _ := damagedSpool(t, 0, func(segs []string) {
		if len(segs) != 1 {
			t.Fatalf("segments %v, want one", segs)
		}
		flipByte(t, segs[0], func(b []byte) int64 { return secondRecord(t, b) + spoolRecordHeaderSize + 100 }) // the second record's payload
	})
	if pe == nil || pe.Corrupt != 1 || pe.Spooled != 0 || len(pe.Failed) != 0 {
		t.Fatalf("Close: %v, want the one damaged fragment reported", pe)
	}
	want := append(slices.Clone(frags[:1]), frags[2:]...)
	checkTimecodes(t, consumeAll(t, c, "cam"), want)
}

// A connection the server ends because it was idle (ERROR 4000 between fragments after
// PutMediaReadTimeout: a camera that stopped sending for a while, or a backlog paced by
// SpoolRate) with nothing waiting on it is no failure: no LastError (the agent's status said
// "endpoint unreachable since ..."), and the next fragment goes at once on a new connection, not
// after a retry backoff (here an hour).
func TestProducerIdleConnectionEnded(t *testing.T) {
	t.Parallel()
	st := store.NewMem()
	srv, err := server.New(server.Config{Store: st, PutMediaReadTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	c, err := New(t.Context(), Config{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(24)}); err != nil {
		t.Fatal(err)
	}
	idle := make(chan struct{})
	var once sync.Once
	sp := openTestSpool(t, t.TempDir(), 0, 0, nil)
	p, err := NewProducer(c, ProducerConfig{Stream: "cam", Spool: sp, RetryBackoff: time.Hour, OnAck: func(a Ack) {
		if a.EventType == AckError && a.ErrorID == 4000 {
			once.Do(func() { close(idle) })
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	frags := shiftedFragments(t, "h264.mkv", 2)
	if err := p.Send(t.Context(), frags[0]); err != nil {
		t.Fatal(err)
	}
	<-idle // stored, then the connection idled out
	if err := p.Send(t.Context(), frags[1]); err != nil {
		t.Fatal(err)
	}
	for {
		st := p.Stats()
		if st.LastError != "" {
			t.Fatalf("stats %+v: the idle connection's end taken for a failure (the next fragment waits a retry backoff)", st)
		}
		if st.Stored == 2 {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("stats %+v: the second fragment was not stored", st)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// damagedSpool spools 12 fragments while the server is down (segments of segBytes, 0: one
// segment), lets damage change the segment files, brings the server up and closes a producer
// that sends the spool again. It returns the fragments, the client, what Close returned as a
// *ProducerError (nil: Close returned nil or another error, which fails the test unless nil), the
// producer's stats and the second spool's notices.
func damagedSpool(t *testing.T, segBytes int64, damage func(segs []string)) ([]*mkv.Fragment, *Client, *ProducerError, ProducerStats, []string) {
	t.Helper()
	fs := newFlakyServer(t)
	frags := shiftedFragments(t, "h264_aac.mkv", 12)
	dir := t.TempDir()
	sp := openTestSpool(t, dir, 0, segBytes, nil)
	_ = spoolWhileDown(t, fs, sp, frags) // everything stays spooled
	sp.Close()
	damage(spoolFiles(t, dir))
	fs.up()
	c := fs.client(t)
	var notices []string
	sp2 := openTestSpool(t, dir, 0, segBytes, &notices)
	p2, err := NewProducer(c, ProducerConfig{Stream: "cam", Spool: sp2, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = p2.Close(t.Context())
	var pe *ProducerError
	if err != nil && !errors.As(err, &pe) {
		t.Fatalf("Close: %v", err)
	}
	return frags, c, pe, p2.Stats(), notices
}

// flipByte flips the bits of byte at of file, or fails the test.
func flipByte(t *testing.T, file string, at func(b []byte) int64) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[at(b)] ^= 0xff
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// secondRecord is where the second record of segment b starts, or fails the test.
func secondRecord(t *testing.T, b []byte) int64 {
	t.Helper()
	_, n, err := readSpoolRecord(bytes.NewReader(b), 0, int64(len(b)), false)
	if err != nil || n >= int64(len(b)) {
		t.Fatalf("first record: %d bytes, %v; want more records after it", n, err)
	}
	return n
}

// diskFull knows a full disk on every release target: ENOSPC on Unix, ERROR_DISK_FULL and
// ERROR_HANDLE_DISK_FULL on Windows (where syscall.ENOSPC is a number no call returns, so the
// spool failed appends there instead of dropping its oldest fragments; TestSpoolDiskFull runs
// the real thing on Linux).
func TestSpoolDiskFullErrors(t *testing.T) {
	t.Parallel()
	write := func(errno syscall.Errno) error {
		return fmt.Errorf("spool: %w", &os.PathError{Op: "write", Path: "0000000000000001.spool", Err: errno})
	}
	for _, c := range []struct {
		goos string
		err  error
		want bool
	}{
		{"linux", write(syscall.ENOSPC), true},
		{"darwin", write(syscall.ENOSPC), true},
		{"windows", write(112), true}, // ERROR_DISK_FULL
		{"windows", write(39), true},  // ERROR_HANDLE_DISK_FULL
		{"windows", write(5), false},  // ERROR_ACCESS_DENIED
		{"linux", write(39), false},   // ENOTEMPTY
		{"linux", write(112), false},  // EHOSTDOWN
		{"windows", errors.New("no space"), false},
		{"linux", nil, false},
	} {
		if got := diskFull(c.err, c.goos); got != c.want {
			t.Errorf("diskFull(%v, %s) = %v, want %v", c.err, c.goos, got, c.want)
		}
	}
}
