package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

func frag(n uint64, size int, at time.Time) *liveFragment {
	return &liveFragment{Meta: store.FragmentMeta{Number: n}, Chunk: make([]byte, size), Published: at}
}

func TestStreamBufferAfterAndEviction(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	b := newStreamBuffer(bufferLimits{MaxBytes: 300, MaxAge: 10 * time.Second})
	for i, n := range []uint64{2, 3, 7} { // gaps: numbers reserved by failed fragments are never published
		b.publish(frag(n, 100, t0.Add(time.Duration(i)*time.Second)))
	}
	tests := []struct {
		after  uint64
		want   uint64 // 0: none
		oldest uint64
	}{{0, 2, 2}, {2, 3, 2}, {3, 7, 2}, {5, 7, 2}, {7, 0, 2}}
	for _, tc := range tests {
		f, oldest := b.after(tc.after)
		got := uint64(0)
		if f != nil {
			got = f.Meta.Number
		}
		if got != tc.want || oldest != tc.oldest {
			t.Errorf("after(%d) = %d (oldest %d), want %d (oldest %d)", tc.after, got, oldest, tc.want, tc.oldest)
		}
	}
	b.publish(frag(5, 100, t0.Add(4*time.Second))) // not increasing: ignored
	if b.get(5) != nil {
		t.Fatal("a number below the last published one was accepted")
	}
	b.publish(frag(8, 100, t0.Add(4*time.Second))) // 400 bytes > 300: the oldest goes
	if _, oldest := b.after(0); oldest != 3 {
		t.Fatalf("oldest after byte eviction = %d, want 3", oldest)
	}
	b.publish(frag(9, 10, t0.Add(20*time.Second))) // everything older than 10 s goes, the newest stays
	if s := b.snapshot(); len(s) != 1 || s[0].Meta.Number != 9 {
		t.Fatalf("after age eviction: %d fragments, want only 9", len(s))
	}
	if b.lastNumber() != 9 {
		t.Fatalf("lastNumber = %d", b.lastNumber())
	}
}

func TestLocalNotifier(t *testing.T) {
	t.Parallel()
	n := newLocalNotifier()
	c, cancel := n.subscribe("cam")
	defer cancel()
	other, cancelOther := n.subscribe("other")
	defer cancelOther()
	for range 3 { // three notices, one pending: never blocks
		n.notify("cam")
	}
	select {
	case <-c:
	default:
		t.Fatal("no notice after notify")
	}
	select {
	case <-c:
		t.Fatal("notices should coalesce into one")
	default:
	}
	select {
	case <-other:
		t.Fatal("a notice for cam woke a subscriber of another stream")
	default:
	}
	cancel()
	cancel() // twice: harmless
	n.notify("other")
	if _, ok := <-other; !ok {
		t.Fatal("other stream's subscriber lost")
	}
}

// The sequencer lets a fragment commit only after every lower reserved number is done.
func TestSequencerOrder(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var q sequencer
		next := uint64(0)
		reserve := func() uint64 {
			n, err := q.reserve(nil, func() (uint64, error) { next++; return next, nil })
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		a, b, c := reserve(), reserve(), reserve()
		turned := make(chan uint64, 3)
		for _, n := range []uint64{c, b} {
			go func() {
				if err := q.turn(t.Context(), n, nil, 0); err != nil {
					t.Error(err)
				}
				turned <- n
			}()
		}
		synctest.Wait()
		if len(turned) != 0 {
			t.Fatal("a later number got its turn while the first is pending")
		}
		if err := q.turn(t.Context(), a, nil, 0); err != nil {
			t.Fatal(err)
		}
		q.done(a) // committed
		synctest.Wait()
		if got := <-turned; got != b || len(turned) != 0 {
			t.Fatalf("after %d: turn went to %d", a, got)
		}
		q.done(b) // abandoned
		synctest.Wait()
		if got := <-turned; got != c {
			t.Fatalf("turn went to %d, want %d", got, c)
		}
		q.done(c)

		ctx, cancel := context.WithCancel(t.Context())
		d, e := reserve(), reserve()
		errc := make(chan error, 1)
		go func() { errc <- q.turn(ctx, e, nil, 0) }()
		synctest.Wait()
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("turn returned nil after cancel")
		}
		q.done(e)
		q.done(d)
	})
}

// A fragment written to the store but not yet durable stays in the buffer past its limits, and
// so does everything after it: a reader that fell back to the store would not find it there.
func TestStreamBufferKeepsUnsynced(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	b := newStreamBuffer(bufferLimits{MaxBytes: 200, MaxAge: 10 * time.Second})
	pending := frag(1, 100, t0)
	pending.unsynced.Store(true)
	b.publish(pending)
	for n := uint64(2); n <= 4; n++ {
		b.publish(frag(n, 100, t0.Add(time.Duration(n)*time.Second)))
	}
	if _, oldest := b.after(0); oldest != 1 {
		t.Fatalf("oldest = %d, want the unsynced fragment 1 kept over the byte limit", oldest)
	}
	pending.unsynced.Store(false)
	b.publish(frag(5, 100, t0.Add(5*time.Second)))
	if _, oldest := b.after(0); oldest != 4 {
		t.Fatalf("oldest = %d once 1 is durable, want 4 (200 bytes)", oldest)
	}
}

// TestChunkReuse streams fragments through a live buffer that keeps only the newest one, so that
// every fragment's chunk memory goes back to the session for a later fragment, while live
// consumers (one slow, one that leaves early), GetMediaForFragmentList and the HLS playback path
// read chunks: each must get exactly the frames sent. Run with -race, it also checks that no
// reader touches a chunk without holding a reference.
func TestChunkReuse(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			e.srv.media.archivedLimits = bufferLimits{MaxBytes: 1, MaxAge: time.Hour}
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			const n = 24
			type got struct {
				nums   []uint64
				frames [][]mkv.Frame
			}
			consume := func(ctx context.Context, delay time.Duration, max int, out chan<- got) {
				body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
				go func() {
					defer body.Close()
					var g got
					fr := mkv.NewFragmentReader(body)
					for len(g.nums) < max {
						f, err := fr.Next()
						if err != nil {
							t.Errorf("live read: %v", err)
							break
						}
						num, _ := parseFragmentNumber(tag(t, f, mkv.TagFragmentNumber))
						g.nums, g.frames = append(g.nums, num), append(g.frames, f.Frames)
						time.Sleep(delay)
					}
					out <- g
				}()
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			results := make(chan got, 3)
			consume(ctx, 0, n, results)
			consume(ctx, 15*time.Millisecond, n, results)
			consume(ctx, 0, 3, results)

			var mu sync.Mutex
			var acked []uint64
			readers := make(chan struct{})
			go func() { // GetMediaForFragmentList and HLS's parse of the newest fragments
				defer close(readers)
				for ctx.Err() == nil {
					mu.Lock()
					nums := slices.Clone(acked)
					mu.Unlock()
					if len(nums) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					i := len(nums) - 1
					body := `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(nums[i]) + `"]}`
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+"/getMediaForFragmentList", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					resp, err := e.ts.Client().Do(req)
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						t.Errorf("GetMediaForFragmentList: %v", err)
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if ctx.Err() != nil {
						return
					}
					if err != nil || resp.StatusCode != 200 {
						t.Errorf("GetMediaForFragmentList: %d %v", resp.StatusCode, err)
						return
					}
					frags := readFragments(t, bytes.NewReader(b))
					if len(frags) != 1 || !sameFrames(frags[0].Frames, c, i) {
						t.Errorf("GetMediaForFragmentList of fragment %d: wrong frames", i)
					}
					pb := &playback{s: e.srv}
					if f, _, err := pb.fragment(ctx, "cam", nums[i]); err != nil || !sameFrames(f.Frames, c, i) {
						t.Errorf("playback fragment %d: %v", i, err)
					}
				}
			}()

			pc := e.startPut(t, "cam")
			pc.write(c.header())
			for i := range n {
				num := pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
				mu.Lock()
				acked = append(acked, num)
				mu.Unlock()
			}
			pc.end()
			for range 3 {
				g := <-results
				for k, num := range g.nums {
					i := slices.Index(acked, num)
					if i < 0 || !sameFrames(g.frames[k], c, i) {
						t.Fatalf("live consumer: fragment %d (index %d): wrong frames", num, i)
					}
				}
				if len(g.nums) != n && len(g.nums) != 3 {
					t.Errorf("live consumer got %d fragments", len(g.nums))
				}
			}
			cancel()
			<-readers
		})
	}
}

// sameFrames reports whether frames are fragment i of the looped clip (data and keyframe flags).
func sameFrames(frames []mkv.Frame, c *clip, i int) bool {
	want := c.frags[i%len(c.frags)]
	if len(frames) != len(want) {
		return false
	}
	for k := range frames {
		if !bytes.Equal(frames[k].Data, want[k].Data) || frames[k].Keyframe != want[k].Keyframe {
			return false
		}
	}
	return true
}

// A live buffer lets go of its fragments once its window has passed, also when its stream
// publishes nothing more (the producer stopped): a retention-0 stream then lists nothing, as
// KVS's live buffer of about 5 minutes does, and no stream's buffer holds memory for good. (The
// buffers evicted only when their stream published: an idle retention-0 stream kept up to 200 MB
// and listed hour-old fragments, every other stream its last 1.5 s.)
func TestLiveBufferWindowWhenIdle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		retention int
	}{{"retention 0", 0}, {"retention 1", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newMediaEnv(t, "fs")
			e.srv.media.liveOnlyLimits.MaxAge = 300 * time.Millisecond
			e.srv.media.archivedLimits.MaxAge = 300 * time.Millisecond
			e.createStream(t, "cam", tc.retention)
			c := loadClip(t, "h264.mkv")
			e.ingestAt(t, "cam", c, 0, 3, baseMillis, tc.retention > 0)
			buffered := func() int {
				b, _ := e.srv.media.cache.stream("cam", "", bufferLimits{})
				return len(b.snapshot())
			}
			if buffered() == 0 {
				t.Fatal("nothing buffered right after the upload")
			}
			waitFor(t, "the idle stream's buffer empties after its window", 10*time.Second, func() bool { return buffered() == 0 })
			frags, _ := listAll(t, e.archivedClient(), &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam")})
			if want := 3 * tc.retention; len(frags) != want {
				t.Fatalf("ListFragments lists %d fragments after the window, want %d", len(frags), want)
			}
		})
	}
}
