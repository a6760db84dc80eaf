package server

import (
	"context"
	"io/fs"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// faultStore wraps a Store and fails AppendAsync on command with the error an FS store's segment
// write gets from a full disk or a failing one (an *fs.PathError around ENOSPC or EIO), as many
// times as asked. A refused append stores nothing, as with the FS store.
type faultStore struct {
	store.Store
	mu    sync.Mutex
	err   error // nil: pass through
	times int   // failures left (<0: until cleared)
	fails int   // failures returned so far
}

// failAppends makes the next n appends (n < 0: all until clear) fail with errno.
func (s *faultStore) failAppends(errno syscall.Errno, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = &fs.PathError{Op: "write", Path: "/data/streams/0000000000000001/0000000000000001.seg", Err: errno}
	s.times = n
}

func (s *faultStore) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = nil
}

func (s *faultStore) AppendAsync(ctx context.Context, stream string, meta store.FragmentMeta, data []byte) (func(context.Context) error, error) {
	s.mu.Lock()
	err := s.err
	if err != nil {
		s.fails++
		if s.times > 0 {
			if s.times--; s.times == 0 {
				s.err = nil
			}
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.Store.AppendAsync(ctx, stream, meta, data)
}

// A failed write (disk full, I/O error) is ERROR 5001 ARCHIVAL_ERROR for that fragment, nothing
// stored is harmed, and ingest resumes when writes succeed again: on a new PutMedia connection,
// and through client.Producer's replay without the producer doing anything.
func TestAppendFaults(t *testing.T) {
	c := loadClip(t, "h264.mkv")
	for _, kind := range storeKinds {
		for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
			t.Run(kind+"/"+errno.Error(), func(t *testing.T) {
				var base store.Store = store.NewMem()
				if kind == "fs" {
					f, err := store.OpenFS(t.TempDir(), store.FSOptions{})
					if err != nil {
						t.Fatal(err)
					}
					base = f
				}
				fsx := &faultStore{Store: base}
				e := newMediaEnvStore(t, fsx)
				e.createStream(t, "cam", 1)
				pc := e.startPut(t, "cam")
				pc.write(c.header())
				var good []uint64
				for i := range 3 {
					good = append(good, pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true))
				}
				_, before := storedFragments(t, e.store, "cam")
				fsx.failAppends(errno, -1)
				pc.writeAsync(c.cluster(t, 3, baseMillis))
				pc.expect(ackBuffering, 0)
				rcv := pc.expect(ackReceived, 0)
				if ev := pc.expectError(5001); ev.FragmentNumber != rcv.FragmentNumber && ev.FragmentNumber != "" {
					t.Errorf("ERROR names %s, the failed fragment is %s", ev.FragmentNumber, rcv.FragmentNumber)
				}
				// While the disk stays full, a new connection fails the same way and stores nothing.
				pc2 := e.startPut(t, "cam")
				pc2.write(c.header())
				pc2.writeAsync(c.cluster(t, 4, baseMillis))
				pc2.expectError(5001)
				metas, after := storedFragments(t, e.store, "cam")
				if len(metas) != 3 {
					t.Fatalf("stored %+v, want the 3 fragments before the fault", metas)
				}
				for i := range after {
					if metas[i].Number != good[i] || len(after[i].Frames) != len(before[i].Frames) {
						t.Fatalf("fragment %d changed after the fault", i)
					}
					for k := range after[i].Frames {
						if string(after[i].Frames[k].Data) != string(before[i].Frames[k].Data) {
							t.Fatalf("fragment %d frame %d changed after the fault", i, k)
						}
					}
				}
				// Space is back: a new connection stores again.
				fsx.clear()
				pc3 := e.startPut(t, "cam")
				pc3.write(c.header())
				n := pc3.fragment(c.cluster(t, 5, baseMillis), c.fragTimecode(5, baseMillis), true)
				pc3.end()
				metas, _ = storedFragments(t, e.store, "cam")
				if len(metas) != 4 || metas[3].Number != n || n <= good[2] {
					t.Fatalf("after recovery stored %+v", metas)
				}
			})
		}
	}

	// client.Producer replays: a fragment refused with 5001 is sent again on a new connection and
	// stored once the store accepts writes again.
	t.Run("producer replay", func(t *testing.T) {
		fsx := &faultStore{Store: store.NewMem()}
		e := newMediaEnvStore(t, fsx)
		e.createStream(t, "cam", 1)
		t.Setenv("AWS_CONFIG_FILE", "/dev/null")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		cl, err := client.New(t.Context(), client.Config{Endpoint: e.ts.URL, HTTPClient: e.ts.Client()})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var errAcks int
		retention := 1
		p, err := client.NewProducer(cl, client.ProducerConfig{Stream: "cam", RetentionHours: &retention, MaxAttempts: 10, RetryBackoff: 10 * time.Millisecond,
			OnAck: func(a client.Ack) {
				if a.EventType == client.AckError {
					mu.Lock()
					errAcks++
					mu.Unlock()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		fsx.failAppends(syscall.ENOSPC, 2) // the disk is full for two appends, then has room again
		for i := range 5 {
			f := &mkv.Fragment{DocType: c.docType, TimecodeScale: c.scale, Tracks: c.tracks, Timecode: c.fragTimecode(i, baseMillis),
				Frames: shift(c.frags[i%len(c.frags)], baseMillis+int64(i/len(c.frags))*c.period)}
			if err := p.Send(t.Context(), f); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Close(t.Context()); err != nil {
			t.Fatalf("producer: %v", err)
		}
		metas, frags := storedFragments(t, e.store, "cam")
		if len(metas) != 5 || errAcks != 2 || fsx.fails != 2 {
			t.Fatalf("stored %d fragments after %d ERROR acks and %d failed appends; want 5, 2, 2", len(metas), errAcks, fsx.fails)
		}
		for i, f := range frags {
			if f.Timecode != c.fragTimecode(i, baseMillis) {
				t.Fatalf("fragment %d has timecode %d, want %d (in send order)", i, f.Timecode, c.fragTimecode(i, baseMillis))
			}
		}
	})
}
