package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/openh264"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// serverImageDecoder is the GetImages decoder kvs server builds (cmd/decoders.go), which the test
// servers use too: OpenH264 in process for H.264 jobs under decode.SplitFrames frames where the
// build has it, the ffmpeg on PATH for the rest. (Without ffmpeg the tests that need it skip.)
var serverImageDecoder = sync.OnceValue(func() ImageDecoder {
	var oh, ff decode.Decoder
	if d, err := openh264.New(); err == nil {
		oh = d
	}
	if d, err := decode.NewFFmpeg(""); err == nil {
		ff = d
	}
	return decode.Combine(oh, ff)
})

// clip is a golden clip cut into keyframe-aligned fragments, as a producer would send it.
type clip struct {
	docType string
	scale   uint64
	tracks  []mkv.Track
	frags   [][]mkv.Frame // frame timecodes in ticks from the clip start
	frames  int
	period  int64 // ticks from the first frame to one past the last: the offset of each loop
}

// loadClip reads testdata/name and groups its frames into fragments at video keyframes (audio
// frames stay in file order, so a fragment may start with audio a little before its keyframe).
func loadClip(t testing.TB, name string) *clip {
	t.Helper()
	data, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	rd := mkv.NewReader(bytes.NewReader(data))
	c := &clip{}
	var cur []mkv.Frame
	var maxTC int64
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case mkv.EventEBMLHeader:
			c.docType = ev.DocType
		case mkv.EventInfo:
			c.scale = ev.TimecodeScale
		case mkv.EventTracks:
			c.tracks = ev.Tracks
		case mkv.EventFrame:
			f := ev.Frame
			f.Data = bytes.Clone(f.Data)
			video := c.tracks[0].Type == mkv.TrackTypeVideo && f.Track == c.tracks[0].Number
			if video && f.Keyframe && len(cur) > 0 {
				c.frags = append(c.frags, cur)
				cur = nil
			}
			cur = append(cur, f)
			maxTC = max(maxTC, f.Timecode)
			c.frames++
		}
	}
	c.frags = append(c.frags, cur)
	c.period = maxTC + 100
	return c
}

// header is the start of a PutMedia body: EBML header, unknown-size Segment, Info, Tracks.
func (c *clip) header() []byte {
	b := mkv.AppendEBMLHeader(nil, c.docType)
	b = mkv.AppendSegmentStart(b)
	b = mkv.AppendInfo(b, c.scale, "test")
	return mkv.AppendTracks(b, c.tracks)
}

// fragTimecode is the cluster timecode of fragment i of the looped clip, base added.
func (c *clip) fragTimecode(i int, base int64) int64 {
	loop := int64(i / len(c.frags))
	return base + loop*c.period + c.frags[i%len(c.frags)][0].Timecode
}

// cluster returns fragment i of the clip looped forever, as one known-size Cluster, with base
// added to every timecode (epoch milliseconds for ABSOLUTE uploads).
func (c *clip) cluster(t testing.TB, i int, base int64) []byte {
	t.Helper()
	b, err := c.appendCluster(nil, i, base)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *clip) appendCluster(b []byte, i int, base int64) ([]byte, error) {
	src := c.frags[i%len(c.frags)]
	off := base + int64(i/len(c.frags))*c.period
	frames := make([]mkv.Frame, len(src))
	for k, f := range src {
		f.Timecode += off
		frames[k] = f
	}
	return mkv.AppendCluster(b, c.fragTimecode(i, base), frames)
}

// unknownSize rewrites a known-size Cluster's header to the 8-byte unknown size producers use.
func unknownSize(cluster []byte) []byte {
	sizeLen := 1
	for mask := byte(0x80); cluster[4]&mask == 0; mask >>= 1 {
		sizeLen++
	}
	out := append([]byte{}, cluster[:4]...)
	out = append(out, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
	return append(out, cluster[4+sizeLen:]...)
}

const baseMillis = 1_700_000_000_000 // ABSOLUTE cluster timecodes start here (epoch ms)

// fakeClock advances one second on every reading, so server timestamps are distinct and known
// to be at least a second apart.
type fakeClock struct{ n atomic.Int64 }

func (c *fakeClock) Now() time.Time {
	return time.Unix(1_800_000_000, 0).Add(time.Duration(c.n.Add(1)) * time.Second)
}

type mediaEnv struct {
	srv   *Server
	ts    *httptest.Server
	store store.Store
}

// newMediaEnv starts a server on kind ("mem" or "fs") storage.
func newMediaEnv(t testing.TB, kind string, mod ...func(*Config)) *mediaEnv {
	t.Helper()
	return newMediaEnvStore(t, openStore(t, kind), mod...)
}

// openStore opens a new store of kind ("mem" or "fs"); the caller closes it.
func openStore(t testing.TB, kind string) store.Store {
	t.Helper()
	if kind != "fs" {
		return store.NewMem()
	}
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func newMediaEnvStore(t testing.TB, st store.Store, mod ...func(*Config)) *mediaEnv {
	t.Helper()
	cfg := Config{Store: st, ImageDecoder: serverImageDecoder()}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		st.Close()
	})
	return &mediaEnv{srv: srv, ts: ts, store: st}
}

// post sends a JSON request and returns the response (the caller closes its body).
func (e *mediaEnv) post(t testing.TB, ctx context.Context, path string, body any, hdr ...string) *http.Response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// call posts and requires a 200 JSON answer, decoded into out (if not nil).
func (e *mediaEnv) call(t testing.TB, path string, body, out any) {
	t.Helper()
	resp := e.post(t, context.Background(), path, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

// createStream creates a stream with the given retention (hours) and returns its ARN.
func (e *mediaEnv) createStream(t testing.TB, name string, retention int) string {
	t.Helper()
	var out struct{ StreamARN string }
	e.call(t, "/createStream", map[string]any{"StreamName": name, "DataRetentionInHours": retention}, &out)
	return out.StreamARN
}

func (e *mediaEnv) deleteStream(t testing.TB, arn string) {
	t.Helper()
	e.call(t, "/deleteStream", map[string]any{"StreamARN": arn}, nil)
}

// putConn is a PutMedia upload in progress: the test writes the body, acks arrive on acks.
type putConn struct {
	t      testing.TB
	pw     *io.PipeWriter
	status int
	errTyp string
	acks   chan ackEvent // closed when the response ends
	idles  chan struct{} // one (non-blocking) send per IDLE ack
}

// startPut opens a PutMedia connection with an io.Pipe body. hdr adds or (with value "")
// removes headers; the default is ABSOLUTE timecodes.
func (e *mediaEnv) startPut(t testing.TB, stream string, hdr ...string) *putConn {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.ts.URL+"/putMedia", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(hdrStreamName, stream)
	req.Header.Set(hdrTimecodeType, "ABSOLUTE")
	req.Header.Set(hdrProducerStartTime, "1700000000.5")
	req.Header.Set("x-amzn-fragment-acknowledgment-required", "1")
	req.Header.Set("Content-Type", "application/json") // as producer-c sends it
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pc := &putConn{t: t, pw: pw, status: resp.StatusCode, errTyp: resp.Header.Get("x-amzn-ErrorType"), acks: make(chan ackEvent, 64), idles: make(chan struct{}, 16)}
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	if resp.StatusCode != 200 {
		resp.Body.Close()
		pw.Close()
		close(pc.acks)
		return pc
	}
	go func() {
		defer close(pc.acks)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev ackEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("ack %q: %v", sc.Text(), err)
				return
			}
			if ev.EventType == ackIdle {
				select {
				case pc.idles <- struct{}{}:
				default:
				}
				continue
			}
			pc.acks <- ev
		}
	}()
	return pc
}

// write sends body bytes (blocking until the server read them).
func (pc *putConn) write(b []byte) {
	pc.t.Helper()
	if _, err := pc.pw.Write(b); err != nil {
		pc.t.Fatalf("body write: %v", err)
	}
}

// writeAsync sends b without waiting for the server to read it (it may stop reading).
func (pc *putConn) writeAsync(b []byte) {
	go func() { _, _ = pc.pw.Write(b) }()
}

// next returns the next non-IDLE ack; ok is false when the response has ended.
func (pc *putConn) next() (ackEvent, bool) {
	ev, ok := <-pc.acks
	return ev, ok
}

// expect reads the next ack and checks its type (and number, when n is not 0).
func (pc *putConn) expect(typ string, n uint64) ackEvent {
	pc.t.Helper()
	ev, ok := pc.next()
	if !ok {
		pc.t.Fatalf("response ended, want %s", typ)
	}
	if ev.EventType != typ {
		pc.t.Fatalf("ack %+v, want %s", ev, typ)
	}
	if n != 0 && ev.FragmentNumber != formatFragmentNumber(n) {
		pc.t.Fatalf("ack %+v, want fragment %d", ev, n)
	}
	return ev
}

// fragment sends one cluster and waits for its three acks; it returns the fragment number.
func (pc *putConn) fragment(cluster []byte, timecode int64, persisted bool) uint64 {
	pc.t.Helper()
	pc.write(cluster)
	b := pc.expect(ackBuffering, 0)
	n, err := parseFragmentNumber(b.FragmentNumber)
	if err != nil {
		pc.t.Fatalf("BUFFERING fragment number %q: %v", b.FragmentNumber, err)
	}
	if b.FragmentTimecode == nil || *b.FragmentTimecode != timecode {
		pc.t.Fatalf("BUFFERING %+v, want timecode %d", b, timecode)
	}
	pc.expect(ackReceived, n)
	if persisted {
		pc.expect(ackPersisted, n)
	}
	return n
}

// end closes the body and requires the response to end with no more acks.
func (pc *putConn) end() {
	pc.t.Helper()
	pc.pw.Close()
	for ev := range pc.acks {
		pc.t.Errorf("unexpected ack after the body ended: %+v", ev)
	}
}

// expectError requires an ERROR ack with the given id and then the end of the response.
func (pc *putConn) expectError(id int) ackEvent {
	pc.t.Helper()
	ev, _ := pc.expectErrorAfter(id)
	return ev
}

// expectErrorAfter is expectError that also returns the last BUFFERING ack before the ERROR
// (nil if none came).
func (pc *putConn) expectErrorAfter(id int) (ackEvent, *ackEvent) {
	pc.t.Helper()
	var ev ackEvent
	var buffering *ackEvent
	for {
		e, ok := pc.next()
		if !ok {
			pc.t.Fatalf("response ended without ERROR %d", id)
		}
		if e.EventType == ackBuffering {
			buffering = &e
		}
		if e.EventType == ackError {
			ev = e
			break
		}
	}
	if ev.ErrorId != id || ev.ErrorCode != ackErrors[id] {
		pc.t.Fatalf("ERROR %+v, want %d %s", ev, id, ackErrors[id])
	}
	for e := range pc.acks {
		pc.t.Errorf("ack after ERROR: %+v", e)
	}
	return ev, buffering
}

// readAll parses concatenated chunks into fragments.
func readFragments(t testing.TB, r io.Reader) []*mkv.Fragment {
	t.Helper()
	fr := mkv.NewFragmentReader(r)
	var out []*mkv.Fragment
	for {
		f, err := fr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("after %d fragments: %v", len(out), err)
		}
		out = append(out, f)
	}
}

func tag(t testing.TB, f *mkv.Fragment, name string) string {
	t.Helper()
	v, ok := f.Tag(name)
	if !ok {
		t.Fatalf("fragment has no %s tag (tags %+v, trailing %+v)", name, f.Tags, f.TrailingTags)
	}
	return v
}

func frameCount(frags []*mkv.Fragment) int {
	n := 0
	for _, f := range frags {
		n += len(f.Frames)
	}
	return n
}

func hasPrefixAll(s []string, p string) bool {
	for _, x := range s {
		if !strings.HasPrefix(x, p) {
			return false
		}
	}
	return true
}

// uploadAtEpoch creates stream name and uploads h264.mkv to it with RELATIVE timecodes from a
// producer start timestamp of 0: a camera whose clock starts at the Unix epoch. It returns the
// clip.
func uploadAtEpoch(t *testing.T, e *mediaEnv, name string) *clip {
	t.Helper()
	e.createStream(t, name, 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, name, hdrTimecodeType, "RELATIVE", hdrProducerStartTime, "0")
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	for i := range c.frags {
		pc.fragment(c.cluster(t, i, 0), c.fragTimecode(i, 0), true)
	}
	pc.end()
	return c
}
