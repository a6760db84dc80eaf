package store

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

// TestFSRetentionPurgeCommitsInSteps: a purge of many fragments (a retention decrease on a
// long stream: a week of 1 s fragments is 600,000) commits the index in steps of whole segments,
// so that other streams' appends are acknowledged in between (bbolt has one writer: one purge
// transaction held every stream's PERSISTED acks for 2.3 s, and 200 MB, at that size), and each
// step leaves the stream as a purge stopped there would.
func TestFSRetentionPurgeCommitsInSteps(t *testing.T) {
	t.Parallel()
	var s *FS
	var steps, otherAcked int
	var left []int
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), purgeBatch: 6}
	opts.afterPurgeCommit = func() {
		steps++
		got, err := s.Range(t.Context(), "old", 0, 0)
		if err != nil {
			t.Error(err)
		}
		left = append(left, len(got))
		if steps == 1 { // the index is free between steps: another stream's append gets its ack
			appendOne(t, s, "other", base.Add(time.Hour), base, 100)
			otherAcked = steps
		}
	}
	s = mustOpenFS(t, t.TempDir(), opts)
	defer s.Close()
	mustCreate(t, s, "old", 1)
	mustCreate(t, s, "other", 1)
	appendN(t, s, "old", 24, 100) // 8 segments of 3 fragments
	n, err := s.EnforceRetention(t.Context(), base.Add(2*time.Hour))
	if err != nil || n != 24 {
		t.Fatalf("retention: %d, %v", n, err)
	}
	if steps != 4 || otherAcked != 1 {
		t.Fatalf("purge of 8 segments of 3 fragments with steps of at most 6: %d index commits (fragments left after each: %v), "+
			"other stream's append acknowledged after step %d; want 4 commits, the append after the first", steps, left, otherAcked)
	}
	if want := []int{18, 12, 6, 0}; !slices.Equal(left, want) {
		t.Fatalf("fragments left after each step: %v, want %v", left, want)
	}
	if segs := segmentFiles(t, s, "old"); len(segs) != 0 {
		t.Fatalf("segments left: %v", segs)
	}
	if st, _ := s.Stats(t.Context()); st.Fragments != 1 {
		t.Fatalf("stats: %d fragments, want the other stream's 1", st.Fragments)
	}
}

// TestFSPurgeLetsAppendsInBetweenSteps: a purge of many fragments (a retention decrease, a lowered
// byte cap) releases the stream between its steps, so the stream's own appends go on while it
// runs: one that held the stream for all its steps (a month's purge at a time: seconds) stalled a
// live camera's PutMedia and its PERSISTED acks. The stream's active segment is among those
// purged: the append between steps must not land in it (its index entries would outlive the
// file), and the counts must end right.
func TestFSPurgeLetsAppendsInBetweenSteps(t *testing.T) {
	t.Parallel()
	var s *FS
	steps, appendedAfter := 0, 0
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), purgeBatch: 6}
	type result struct {
		m   FragmentMeta
		err error
	}
	done := make(chan result, 1)
	var live FragmentMeta
	opts.afterPurgeCommit = func() {
		steps++
		if steps != 1 {
			return
		}
		go func() {
			ctx := context.Background()
			m := FragmentMeta{ServerTime: base.Add(3 * time.Hour), ProducerTime: base.Add(3 * time.Hour), Duration: 2 * time.Second, Size: 100}
			var err error
			if m.Number, err = s.NextNumber(ctx, "cam"); err == nil {
				err = Append(ctx, s, "cam", m, payload("cam", m.Number, 100))
			}
			done <- result{m, err}
		}()
		select {
		case r := <-done: // the purge waits here: its next step cannot have run
			live, appendedAfter = r.m, steps
			if r.err != nil {
				t.Errorf("append during the purge: %v", r.err)
			}
		case <-time.After(10 * time.Second): // a deadlock guard, not a timing check
			t.Errorf("an append to the stream being purged did not complete within 10 s after the purge's first step: " +
				"the purge holds the stream's lock across all its steps")
		}
	}
	s = mustOpenFS(t, t.TempDir(), opts)
	defer s.Close()
	mustCreate(t, s, "cam", 1)
	appendN(t, s, "cam", 23, 100) // 8 segments: 7 of 3 fragments, the active one of 2 with room for 1
	n, err := s.EnforceRetention(t.Context(), base.Add(2*time.Hour))
	if err != nil || n != 23 {
		t.Fatalf("retention: %d fragments deleted, %v; want 23", n, err)
	}
	if appendedAfter == 0 {
		r := <-done // it gets the stream once the purge is over
		live = r.m
	}
	if steps != 4 || appendedAfter != 1 {
		t.Fatalf("purge: %d steps, the append completed after step %d; want 4 steps, the append after the first", steps, appendedAfter)
	}
	got, err := s.Range(t.Context(), "cam", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkMetas(t, "fragments left", got, []FragmentMeta{live})
	if b, _ := readAll(t, s, "cam", live.Number); !slices.Equal(b, payload("cam", live.Number, 100)) {
		t.Fatal("the fragment appended during the purge reads back different")
	}
	segs := segmentFiles(t, s, "cam")
	if len(segs) != 1 {
		t.Fatalf("segment files left: %v, want the new one", segs)
	}
	if st, _ := s.Stats(t.Context()); st.Fragments != 1 || st.Bytes-s.indexBytes() != recordHeaderSize+100 {
		t.Fatalf("stats: %d fragments, %d segment bytes; want 1, %d", st.Fragments, st.Bytes-s.indexBytes(), recordHeaderSize+100)
	}
}

// TestFSPurgeBetweenStepsRechecks: what changes between a purge's steps, the stream released, is
// taken into account: segments another purge of the stream deleted meanwhile are neither counted
// nor subtracted again, and a stream deleted meanwhile ends the purge without an error.
func TestFSPurgeBetweenStepsRechecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []string{"another purge", "stream deleted"} {
		t.Run(tc, func(t *testing.T) {
			t.Parallel()
			var s *FS
			steps, inner := 0, 0
			opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), purgeBatch: 6}
			opts.afterPurgeCommit = func() {
				steps++
				if steps != 1 {
					return
				}
				var err error
				if tc == "another purge" {
					inner, err = s.EnforceRetention(t.Context(), base.Add(2*time.Hour))
				} else {
					err = s.DeleteStream(t.Context(), "cam", "")
				}
				if err != nil {
					t.Errorf("%s between the steps: %v", tc, err)
				}
			}
			s = mustOpenFS(t, t.TempDir(), opts)
			defer s.Close()
			mustCreate(t, s, "cam", 1)
			appendN(t, s, "cam", 24, 100) // 8 segments of 3 fragments: 4 steps
			n, err := s.EnforceRetention(t.Context(), base.Add(2*time.Hour))
			wantInner := 18
			if tc == "stream deleted" {
				wantInner = 0
			}
			if err != nil || n != 6 || inner != wantInner {
				t.Fatalf("retention: %d fragments deleted (and %d by the purge in between), %v; want 6 (and %d), no error", n, inner, err, wantInner)
			}
			st, _ := s.Stats(t.Context())
			if st.Fragments != 0 || st.Bytes != s.indexBytes() {
				t.Fatalf("stats: %d fragments, %d segment bytes; want none", st.Fragments, st.Bytes-s.indexBytes())
			}
		})
	}
}

// TestFSPurgeDeletedStreamClosesDetachedSegment: the stream's active segment, detached by a purge
// that chose it, has its file closed when the stream is deleted before the purge's step for it:
// left open, the deleted file's disk space stayed taken, and its descriptor held, until the
// process ended (DeleteStream closes only the active segment, Close only the streams it has).
func TestFSPurgeDeletedStreamClosesDetachedSegment(t *testing.T) {
	t.Parallel()
	var s *FS
	steps := 0
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), purgeBatch: 6}
	opts.afterPurgeCommit = func() {
		if steps++; steps == 1 {
			if err := s.DeleteStream(t.Context(), "cam", ""); err != nil {
				t.Errorf("delete between the steps: %v", err)
			}
		}
	}
	s = mustOpenFS(t, t.TempDir(), opts)
	defer s.Close()
	mustCreate(t, s, "cam", 1)
	appendN(t, s, "cam", 23, 100) // 8 segments, the active one of 2 fragments: the purge's 4th step
	s.mu.RLock()
	st := s.streams["cam"]
	s.mu.RUnlock()
	st.mu.Lock()
	active := st.active
	st.mu.Unlock()
	if _, err := s.EnforceRetention(t.Context(), base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if steps != 2 {
		t.Fatalf("%d purge steps, want 2: the second finds the stream deleted and ends the purge", steps)
	}
	if _, err := active.f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the stream's active segment, detached by the purge, after the stream was deleted: Stat %v, want its file closed", err)
	}
}

// TestFSPurgeStopsWhenContextEnds: a retention pass whose context ends (an UpdateDataRetention
// decrease purges for a bounded time before it answers) stops after the step it is in, with that
// step's deletions committed and counted; the next pass deletes the rest.
func TestFSPurgeStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), purgeBatch: 6}
	opts.afterPurgeCommit = cancel
	s := mustOpenFS(t, t.TempDir(), opts)
	defer s.Close()
	mustCreate(t, s, "old", 1)
	appendN(t, s, "old", 24, 100) // 8 segments of 3 fragments
	n, err := s.EnforceRetention(ctx, base.Add(2*time.Hour))
	if !errors.Is(err, context.Canceled) || n != 6 {
		t.Fatalf("a pass whose context ends after its first step: %d fragments, %v; want 6 (one step), context.Canceled", n, err)
	}
	if got, err := s.Range(t.Context(), "old", 0, 0); err != nil || len(got) != 18 {
		t.Fatalf("after the stopped pass: %d fragments listed, %v; want 18", len(got), err)
	}
	s.opts.afterPurgeCommit = nil
	if n, err := s.EnforceRetention(t.Context(), base.Add(2*time.Hour)); err != nil || n != 18 {
		t.Fatalf("the next pass: %d, %v; want the other 18", n, err)
	}
	if segs := segmentFiles(t, s, "old"); len(segs) != 0 {
		t.Fatalf("segments left: %v", segs)
	}
}
