package server

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// ingest uploads fragments [from, from+n) of the looped clip on one connection and returns their
// numbers.
func (e *mediaEnv) ingest(t testing.TB, stream string, c *clip, from, n int) []uint64 {
	t.Helper()
	return e.ingestAt(t, stream, c, from, n, baseMillis, true)
}

// ingestAt is ingest with base added to every timecode; persisted says whether the stream
// stores fragments (else no PERSISTED ack comes).
func (e *mediaEnv) ingestAt(t testing.TB, stream string, c *clip, from, n int, base int64, persisted bool) []uint64 {
	t.Helper()
	pc := e.startPut(t, stream)
	if pc.status != 200 {
		t.Fatalf("put media: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	var nums []uint64
	for i := from; i < from+n; i++ {
		nums = append(nums, pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), persisted))
	}
	pc.end()
	return nums
}

// getMedia starts a GetMedia request; the caller reads and closes the body.
func (e *mediaEnv) getMedia(t testing.TB, ctx context.Context, stream string, sel map[string]any, follow bool) io.ReadCloser {
	t.Helper()
	var hdr []string
	if !follow {
		hdr = []string{hdrNoFollow, "1"}
	}
	resp := e.post(t, ctx, "/getMedia", map[string]any{"StreamName": stream, "StartSelector": sel}, hdr...)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("get media %v: %d %s", sel, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "video/webm" {
		t.Errorf("Content-Type %q, want video/webm", ct)
	}
	return resp.Body
}

func fragmentNumbers(t testing.TB, frags []*mkv.Fragment) []uint64 {
	t.Helper()
	var out []uint64
	for _, f := range frags {
		n, err := parseFragmentNumber(tag(t, f, mkv.TagFragmentNumber))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func equalNumbers(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGetMediaSelectors(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			clock := &fakeClock{}
			e := newMediaEnv(t, kind, func(c *Config) { c.Now = clock.Now })
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			nums := e.ingest(t, "cam", c, 0, 8)
			metas, err := e.store.Range(t.Context(), "cam", 1, 0)
			if err != nil || len(metas) != 8 {
				t.Fatalf("store: %d fragments, %v", len(metas), err)
			}
			sec := func(tm time.Time) float64 { return float64(tm.UnixMicro()) / 1e6 }
			cases := []struct {
				name string
				sel  map[string]any
				want []uint64
			}{
				{"earliest", map[string]any{"StartSelectorType": "EARLIEST"}, nums},
				{"now", map[string]any{"StartSelectorType": "NOW"}, nil},
				{"fragment number is inclusive", map[string]any{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": formatFragmentNumber(nums[3])}, nums[3:]},
				{"continuation token", map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": formatFragmentNumber(nums[3])}, nums[4:]},
				{"server timestamp at start", map[string]any{"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": sec(metas[2].ServerTime)}, nums[2:]},
				{"server timestamp inside", map[string]any{"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": sec(metas[2].ServerTime) + 0.5}, nums[2:]},
				{"server timestamp before all", map[string]any{"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": 1000}, nums},
				{"server timestamp after all", map[string]any{"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": sec(metas[7].ServerTime) + 60}, nil},
				{"producer timestamp inside", map[string]any{"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": sec(metas[5].ProducerTime) + 0.2}, nums[5:]},
				{"producer timestamp in a gap", map[string]any{"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": sec(metas[3].ProducerTime) + 1.05}, nums[4:]},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					body := e.getMedia(t, t.Context(), "cam", tc.sel, false)
					defer body.Close()
					if got := fragmentNumbers(t, readFragments(t, body)); !equalNumbers(got, tc.want) {
						t.Fatalf("got fragments %v, want %v", got, tc.want)
					}
				})
			}
		})
	}
}

func TestGetMediaRequestErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	cases := []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"no selector", map[string]any{"StreamName": "cam"}, 400, codeInvalidArgument},
		{"unknown type", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "LATEST"}}, 400, codeInvalidArgument},
		{"number missing", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "FRAGMENT_NUMBER"}}, 400, codeInvalidArgument},
		{"number not digits", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": "12a"}}, 400, codeInvalidArgument},
		{"number unknown", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": formatFragmentNumber(99)}}, 404, codeResourceNotFound},
		{"number foreign", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": "123"}}, 404, codeResourceNotFound},
		{"timestamp missing", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "SERVER_TIMESTAMP"}}, 400, codeInvalidArgument},
		{"timestamp string", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": "now"}}, 400, codeInvalidArgument},
		{"token missing", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "CONTINUATION_TOKEN"}}, 400, codeInvalidArgument},
		{"token foreign", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": "abc"}}, 400, codeInvalidArgument},
		// The largest number: nothing can follow it (c.last+1 wrapped to 0 and streamed from the start).
		{"token at the end of numbers", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": formatFragmentNumber(math.MaxUint64)}}, 400, codeInvalidArgument},
		{"unknown stream", map[string]any{"StreamName": "nope", "StartSelector": map[string]any{"StartSelectorType": "NOW"}}, 404, codeResourceNotFound},
		{"no stream", map[string]any{"StartSelector": map[string]any{"StartSelectorType": "NOW"}}, 400, codeInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.post(t, t.Context(), "/getMedia", tc.body)
			defer resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("x-amzn-ErrorType") != tc.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), tc.status, tc.code)
			}
		})
	}
}

var timestampTagPattern = regexp.MustCompile(`^[0-9]+\.[0-9]{3}$`)

func TestGetMediaTags(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264_aac.mkv")
	nums := e.ingest(t, "cam", c, 0, 4)
	body := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, false)
	defer body.Close()
	frags := readFragments(t, body)
	if len(frags) != 4 {
		t.Fatalf("%d fragments", len(frags))
	}
	for i, f := range frags {
		num := formatFragmentNumber(nums[i])
		if got := tag(t, f, mkv.TagFragmentNumber); got != num {
			t.Errorf("FRAGMENT_NUMBER %s, want %s", got, num)
		}
		if got := tag(t, f, mkv.TagContinuationToken); got != num {
			t.Errorf("CONTINUATION_TOKEN %s, want %s", got, num)
		}
		if got := tag(t, f, mkv.TagServerTimestamp); !timestampTagPattern.MatchString(got) {
			t.Errorf("SERVER_TIMESTAMP %q", got)
		}
		if got, want := tag(t, f, mkv.TagProducerTimestamp), formatTimestampTag(c.fragTimecode(i, baseMillis)*1e6); got != want {
			t.Errorf("PRODUCER_TIMESTAMP %s, want %s", got, want)
		}
		if ms, err := strconv.ParseInt(tag(t, f, mkv.TagMillisBehindNow), 10, 64); err != nil || ms < 0 {
			t.Errorf("MILLIS_BEHIND_NOW %q", tag(t, f, mkv.TagMillisBehindNow))
		}
		if len(f.Frames) != len(c.frags[i]) || len(f.Tracks) != 2 {
			t.Errorf("fragment %d: %d frames, %d tracks", i, len(f.Frames), len(f.Tracks))
		}
	}
}

// A consumer at NOW receives every frame of a producer that starts after it.
func TestGetMediaLive(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			e.ingest(t, "cam", c, 0, 2) // older fragments: NOW must not send them
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
			defer body.Close()
			got := make(chan []uint64, 1)
			frames := make(chan int, 1)
			go func() {
				fr := mkv.NewFragmentReader(body)
				var nums []uint64
				n := 0
				for len(nums) < 8 {
					f, err := fr.Next()
					if err != nil {
						t.Errorf("live read: %v", err)
						break
					}
					num, _ := parseFragmentNumber(tag(t, f, mkv.TagFragmentNumber))
					nums = append(nums, num)
					n += len(f.Frames)
				}
				got <- nums
				frames <- n
			}()
			nums := e.ingest(t, "cam", c, 2, 8)
			if g := <-got; !equalNumbers(g, nums) {
				t.Fatalf("live consumer got %v, want %v", g, nums)
			}
			if n := <-frames; n != 2*c.frames {
				t.Fatalf("live consumer got %d frames, want %d", n, 2*c.frames)
			}
		})
	}
}

func TestGetMediaContinuationResume(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	nums := e.ingest(t, "cam", c, 0, 8)
	ctx, cancel := context.WithCancel(t.Context())
	body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "EARLIEST"}, true)
	fr := mkv.NewFragmentReader(body)
	var token string
	for range 3 {
		f, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		token = tag(t, f, mkv.TagContinuationToken)
	}
	cancel() // the client goes away mid-stream
	body.Close()
	rest := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": token}, false)
	defer rest.Close()
	if got := fragmentNumbers(t, readFragments(t, rest)); !equalNumbers(got, nums[3:]) {
		t.Fatalf("resumed with %v, want %v", got, nums[3:])
	}
}

// A consumer starting at EARLIEST on a stream whose early fragments left the live buffer reads
// them from the store and switches to the buffer once; while it keeps up, fragments that arrive
// come from the buffer. When it falls behind the buffer (the buffer here holds one fragment, and
// the consumer is held in the delivery hook while more are published), it reads what was evicted
// from the store and returns to the buffer. Either way it sees every number exactly once, in order.
//
// Which source a fragment comes from depends on whether the consumer looked before the next
// publish evicted it, so each phase fixes that order: the consumer is idle at the live edge before
// a publish (keeping up), or blocked until all publishes are done (falling behind).
func TestGetMediaArchiveToBuffer(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			// Chunks of h264.mkv are 6.5 to 8.7 kB: the buffer holds the newest fragment only.
			e.srv.media.archivedLimits = bufferLimits{MaxBytes: 12_000, MaxAge: time.Hour}
			type delivery struct {
				n         uint64
				fromStore bool
			}
			var mu sync.Mutex
			var log []delivery
			stallNext := false             // the next delivery waits for release
			release := make(chan struct{}) // closed once the publishes to fall behind are done
			var releaseOnce sync.Once
			releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
			defer releaseAll() // never leave a handler blocked (the server's cleanup waits for it)
			e.srv.media.testDeliver = func(n uint64, fromStore bool) {
				mu.Lock()
				log = append(log, delivery{n, fromStore})
				stall := stallNext
				stallNext = false
				mu.Unlock()
				if stall {
					<-release
				}
			}
			// deliveries returns the log from index i on.
			deliveries := func(i int) []delivery {
				mu.Lock()
				defer mu.Unlock()
				return append([]delivery(nil), log[i:]...)
			}
			// fromStore reports, per delivery, whether it came from the store.
			fromStore := func(ds []delivery) []bool {
				var out []bool
				for _, d := range ds {
					out = append(out, d.fromStore)
				}
				return out
			}

			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			nums := e.ingest(t, "cam", c, 0, 8)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "EARLIEST"}, true)
			defer body.Close()
			fr := mkv.NewFragmentReader(body)
			var got []uint64
			read := func(k int) {
				t.Helper()
				for range k {
					f, err := fr.Next()
					if err != nil {
						t.Fatal(err)
					}
					n, _ := parseFragmentNumber(tag(t, f, mkv.TagFragmentNumber))
					got = append(got, n)
				}
			}

			// check requires the fragments read since index from to be the ones ingested, and their
			// deliveries to come from the sources in want.
			check := func(what string, from int, want ...bool) {
				t.Helper()
				if !equalNumbers(got[from:], nums[from:]) {
					t.Fatalf("%s: got %v, want %v", what, got[from:], nums[from:])
				}
				ds := deliveries(from)
				if !slices.Equal(fromStore(ds), want) {
					t.Fatalf("%s: deliveries %+v, want from the store %v", what, ds, want)
				}
			}

			// The archive: from the store, then the one buffered fragment.
			read(8)
			check("archive", 0, true, true, true, true, true, true, true, false)

			// Keeping up: each fragment is published while the consumer waits at the live edge
			// (it has delivered the one before), so each comes from the buffer.
			for i := 8; i < 12; i++ {
				nums = append(nums, e.ingest(t, "cam", c, i, 1)...)
				read(1)
			}
			check("keeping up", 8, false, false, false, false)

			// Falling behind: the consumer is held on the first of 4 new fragments until all 4 are
			// published, so the next two were evicted meanwhile: they come from the store, the
			// newest from the buffer. (The held one comes from either, depending on when the
			// consumer woke up.)
			mu.Lock()
			stallNext = true
			mu.Unlock()
			nums = append(nums, e.ingest(t, "cam", c, 12, 4)...)
			releaseAll()
			read(4)
			ds := deliveries(12)
			held := len(ds) > 0 && ds[0].fromStore
			check("falling behind", 12, held, true, true, false)
		})
	}
}

func TestGetMediaStreamDeleted(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	arn := e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	nums := e.ingest(t, "cam", c, 0, 4)
	body := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, true)
	defer body.Close()
	fr := mkv.NewFragmentReader(body)
	for range 4 {
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}
	e.deleteStream(t, arn)
	f, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Frames) != 0 || tag(t, f, mkv.TagErrorID) != "4000" || tag(t, f, mkv.TagFragmentNumber) != formatFragmentNumber(nums[3]) {
		t.Fatalf("error chunk %+v", f)
	}
	if _, ok := f.Tag(mkv.TagServerTimestamp); ok {
		t.Error("error chunk has a SERVER_TIMESTAMP")
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after the error chunk: %v, want EOF", err)
	}
}

// A consumer that never reads holds up nobody.
func TestGetMediaStalledConsumer(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem", func(c *Config) { c.MediaWriteTimeout = 200 * time.Millisecond })
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	stalled := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer stalled.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	live := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer live.Close()
	done := make(chan int)
	go func() {
		fr := mkv.NewFragmentReader(live)
		n := 0
		for ; n < 40; n++ {
			if _, err := fr.Next(); err != nil {
				break
			}
		}
		done <- n
	}()
	e.ingest(t, "cam", c, 0, 40)
	if n := <-done; n != 40 {
		t.Fatalf("reading consumer got %d fragments, want 40", n)
	}
}

func TestGetMediaIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem", func(c *Config) { c.GetMediaIdleTimeout = 50 * time.Millisecond })
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	e.ingest(t, "cam", c, 0, 2)
	body := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, true)
	defer body.Close()
	if frags := readFragments(t, body); len(frags) != 2 { // ends by itself after the idle timeout
		t.Fatalf("%d fragments", len(frags))
	}
}

// ffprobe decodes GetMedia output (concatenated chunks) completely.
func TestGetMediaFFprobe(t *testing.T) {
	t.Parallel()
	ffprobe := testutil.NeedTool(t, "ffprobe")
	e := newMediaEnv(t, "fs")
	e.createStream(t, "cam", 1)
	for _, name := range []string{"h264.mkv", "h264_aac.mkv"} {
		t.Run(name, func(t *testing.T) {
			c := loadClip(t, name)
			stream := "s" + strconv.Itoa(len(name))
			e.createStream(t, stream, 1)
			e.ingest(t, stream, c, 0, 8) // the clip twice
			body := e.getMedia(t, t.Context(), stream, map[string]any{"StartSelectorType": "EARLIEST"}, false)
			path := filepath.Join(t.TempDir(), "out.mkv")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, body); err != nil {
				t.Fatal(err)
			}
			body.Close()
			f.Close()
			checkFFprobe(t, ffprobe, path, c, 2)
		})
	}
}

// checkFFprobe requires path to hold loops × the clip's video frames and its video codec.
func checkFFprobe(t *testing.T, ffprobe, path string, c *clip, loops int) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), ffprobe, "-v", "error", "-count_packets", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,nb_read_packets", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var res struct {
		Streams []struct {
			CodecName     string `json:"codec_name"`
			NbReadPackets string `json:"nb_read_packets"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) != 1 {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	video := 0
	for _, fr := range c.frags {
		for _, f := range fr {
			if f.Track == c.tracks[0].Number {
				video++
			}
		}
	}
	if s := res.Streams[0]; s.CodecName != "h264" || s.NbReadPackets != strconv.Itoa(loops*video) {
		t.Fatalf("ffprobe: %+v, want h264 with %d packets", s, loops*video)
	}
}

// A GetMedia follower over HTTP/2 outlives a quiet stream: no write deadline is left armed
// between chunks (on HTTP/2 a deadline that fires resets the stream, written to or not).
func TestGetMediaHTTP2QuietStream(t *testing.T) {
	t.Parallel()
	st := store.NewMem()
	srv, err := New(Config{Store: st, MediaWriteTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Close()
		_ = st.Close()
	})
	e := &mediaEnv{srv: srv, ts: ts, store: st}
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer body.Close()
	got := make(chan error, 2)
	go func() {
		fr := mkv.NewFragmentReader(body)
		for {
			_, err := fr.Next()
			got <- err
			if err != nil {
				return
			}
		}
	}()
	e.ingest(t, "cam", c, 0, 1)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * 200 * time.Millisecond) // the stream is quiet for longer than MediaWriteTimeout
	e.ingest(t, "cam", c, 1, 1)
	if err := <-got; err != nil {
		t.Fatalf("the fragment after a quiet spell: %v", err)
	}
}
