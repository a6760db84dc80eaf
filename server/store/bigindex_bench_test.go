package store

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestMakeBigIndex is a setup step for server.BenchmarkListFragments, not a test: with
// KVS_BIG_INDEX_DIR set to an empty or missing directory it builds there an FS store whose stream
// "big" indexes 1 M fragments, one second apart from 2026-11-25T12:00:00Z (server time; producer
// time 2 s behind), as BenchmarkTimeRange uses. See scripts/perf.sh.
func TestMakeBigIndex(t *testing.T) {
	dir := os.Getenv("KVS_BIG_INDEX_DIR")
	if dir == "" {
		t.Skip("set KVS_BIG_INDEX_DIR to build the 1 M fragment index for server.BenchmarkListFragments")
	}
	start := time.Now()
	s, err := OpenFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateStream(context.Background(), Stream{Name: "big", RetentionHours: 24 * 365 * 100}); err != nil {
		t.Fatal(err)
	}
	metas := make([]FragmentMeta, benchFragments)
	for i := range metas {
		ts := base.Add(time.Duration(i) * time.Second)
		metas[i] = FragmentMeta{Number: uint64(i + 1), ServerTime: ts, ProducerTime: ts.Add(-2 * time.Second), Duration: time.Second, Size: benchRecord}
	}
	if err := s.bulkIndex("big", metas); err != nil {
		t.Fatal(err)
	}
	t.Logf("built a %d-fragment index in %s in %v", benchFragments, dir, time.Since(start))
}
