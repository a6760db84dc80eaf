package store

import (
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
