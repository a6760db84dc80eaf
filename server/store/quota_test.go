package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	kvstestutil "github.com/openkvs/kvs/internal/testutil"
)

// counterValue reads a counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// quotaRun appends rounds × 3 streams of 20 kB fragments, server times increasing across the
// streams, to s and checks after each append that the data directory stays within limit plus
// slack. It returns every fragment appended, in order.
func quotaRun(t *testing.T, s *FS, dir string, rounds int, limit, slack int64) []FragmentMeta {
	t.Helper()
	streams := []string{"a", "b", "c"}
	for _, name := range streams {
		mustCreate(t, s, name, 24)
	}
	var all []FragmentMeta
	for i := range rounds {
		for j, name := range streams {
			ts := base.Add(time.Duration(i*len(streams)+j) * time.Second)
			m := appendOne(t, s, name, ts, ts, 20_000) // ingest goes on: appendOne fails the test otherwise
			all = append(all, m)
			if used := kvstestutil.DirBytes(t, dir); used > limit+slack {
				t.Fatalf("after %d appends the data directory takes %d bytes, over the %d-byte quota by more than %d", len(all), used, limit, slack)
			}
		}
	}
	return all
}

// checkOldestGone checks that what s still holds of all (in append order, which is server time
// order) is a suffix: the oldest fragments went first, across streams, and the newest stayed.
// It returns how many went.
func checkOldestGone(t *testing.T, s *FS, all []FragmentMeta) int {
	t.Helper()
	ctx := context.Background()
	streamOf := func(i int) string { return []string{"a", "b", "c"}[i%3] }
	kept := make([]bool, len(all))
	for i, m := range all {
		_, err := s.Fragment(ctx, streamOf(i), m.Number)
		kept[i] = err == nil
	}
	first := len(all)
	for i := range all {
		if kept[i] {
			first = i
			break
		}
	}
	// Whole segments go, each stream's oldest first: a stream's leading segment may be older
	// than another's kept one by less than a segment's worth of fragments.
	const segmentSpan = 3 * 4 // 3 streams × the records of one 64 KiB segment
	for i := first + segmentSpan; i < len(all); i++ {
		if !kept[i] {
			t.Fatalf("fragment %d of %d (%s/%d) went while older ones stayed", i, len(all), streamOf(i), all[i].Number)
		}
	}
	for i := range first {
		if kept[i] {
			t.Fatalf("fragment %d stayed", i)
		}
	}
	if first == 0 {
		t.Fatal("nothing was deleted")
	}
	t.Logf("the oldest %d of %d fragments went; the data directory takes %d bytes", first, len(all), kvstestutil.DirBytes(t, s.dir))
	for i := len(all) - 3; i < len(all); i++ {
		if !kept[i] {
			t.Fatalf("the newest fragment of %s went", streamOf(i))
		}
	}
	return first
}

// TestFSDiskQuota: with MaxDiskBytes, appends of 3 streams go on past the quota while the data
// directory stays within it plus the index's growth; the oldest fragments across the streams go
// first, whole segments at a time, newest stay; each deletion is logged and counted.
func TestFSDiskQuota(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	const limit = 1 << 20
	s := mustOpenFS(t, dir, FSOptions{MaxDiskBytes: limit, Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := s.opts.MaxSegmentBytes; got != 64<<10 {
		t.Errorf("segments of %d bytes under a 1 MiB quota, want 64 KiB", got)
	}
	all := quotaRun(t, s, dir, 60, limit, 64<<10) // 3.6 MB through a 1 MiB quota
	gone := checkOldestGone(t, s, all)
	if n := counterValue(t, s.metrics.deletedFragments.WithLabelValues(reasonDiskQuota)); int(n) != gone {
		t.Errorf("kvs_store_deleted_fragments_total{reason=disk_quota} = %v, want %d", n, gone)
	}
	if n := strings.Count(logs.String(), "reason=disk_quota"); n == 0 {
		t.Errorf("no deletion logged:\n%s", logs.String())
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes > limit || st.Fragments != int64(len(all)-gone) {
		t.Errorf("Stats %+v, want at most %d bytes and %d fragments", st, limit, len(all)-gone)
	}
	// A restart keeps the quota and the counts.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpenFS(t, dir, FSOptions{MaxDiskBytes: limit})
	st2, err := s2.Stats(t.Context())
	if err != nil || st2.Fragments != st.Fragments {
		t.Fatalf("Stats after a restart %+v, %v; before %+v", st2, err, st)
	}
}

// TestFSDiskQuotaPercent fills a 4 MiB tmpfs through a 50% quota: the filesystem stays half
// full (plus the index's growth) while 3× its size goes through, oldest data first.
func TestFSDiskQuotaPercent(t *testing.T) {
	t.Parallel()
	dir := kvstestutil.Tmpfs(t, "4m")
	s := mustOpenFS(t, dir, FSOptions{MaxDiskPercent: 50})
	used0, avail, err := filesystemUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	limit := (used0 + avail) / 2
	all := quotaRun(t, s, dir, 200, limit, 64<<10) // 12 MB through 2 MiB
	checkOldestGone(t, s, all)
	if used, _, _ := filesystemUsage(dir); used > limit+64<<10 {
		t.Errorf("the tmpfs has %d bytes used, over 50%% (%d) by more than 64 KiB", used, limit)
	}
}

// TestFSStreamCapKeepsNewest: a kvs:max-bytes cap set on a stream whose segment is bigger than
// the cap (the stream recorded without a cap, in 64 MiB segments) keeps the stream's newest
// fragment, as the contract says, at the next EnforceRetention and at the next append. The
// pass deleted the whole segment, and with it every fragment of the stream.
func TestFSStreamCapKeepsNewest(t *testing.T) {
	t.Parallel()
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	defer s.Close()
	ctx := t.Context()
	mustCreate(t, s, "cam", 24)
	ms := appendN(t, s, "cam", 10, 1000) // one segment of 10 records
	if _, err := s.UpdateStream(ctx, "cam", func(st *Stream) error { st.Tags[MaxBytesTag] = "3KB"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnforceRetention(ctx, base); err != nil {
		t.Fatal(err)
	}
	newest := ms[len(ms)-1]
	if _, err := s.Fragment(ctx, "cam", newest.Number); err != nil {
		t.Fatalf("the newest fragment after the cap's pass: %v", err)
	}
	// The next appends roll to segments sized to the cap; the old segment goes once it no
	// longer holds the newest fragment.
	more := appendN(t, s, "cam", 3, 1000)
	got, err := s.Range(ctx, "cam", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[len(got)-1].Number != more[2].Number {
		t.Fatalf("after 3 more appends: %v, want the newest %d kept", numbers(got), more[2].Number)
	}
	var sum int64
	for _, m := range got {
		sum += m.Size
	}
	if sum > 3000 {
		t.Fatalf("after 3 more appends the stream keeps %d bytes (%v), over its 3 KB cap", sum, numbers(got))
	}
}

// TestFSFullDiskLeavesNoEmptySegments: on a full filesystem (no quota set) appends fail with
// the write's ENOSPC, acknowledge nothing that is not stored, and leave no file behind; once
// space is free again the stream takes appends and everything acknowledged reads back, also
// after a restart. Each failed append left an empty segment file (and an entry in memory) that
// only a restart removed: a producer retrying against a full disk made one per attempt.
func TestFSFullDiskLeavesNoEmptySegments(t *testing.T) {
	t.Parallel()
	dir := kvstestutil.Tmpfs(t, "2m")
	s := mustOpenFS(t, dir, FSOptions{})
	ctx := t.Context()
	mustCreate(t, s, "filler", 24)
	mustCreate(t, s, "cam", 24)
	appendN(t, s, "filler", 5, 100_000)
	var acked []FragmentMeta
	fails := 0
	for i := 0; fails < 10; i++ {
		if i > 100 {
			t.Fatal("a 2 MiB filesystem took 100 appends of 100 kB")
		}
		n, err := s.NextNumber(ctx, "cam")
		if err != nil {
			t.Fatal(err)
		}
		m := FragmentMeta{Number: n, ServerTime: base.Add(time.Duration(i) * time.Second)}
		if err := Append(ctx, s, "cam", m, payload("cam", n, 100_000)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("append on a full disk: %v, want ENOSPC", err)
			}
			fails++
			continue
		}
		m.Size = 100_000
		acked = append(acked, m)
	}
	st, _, _ := s.lookup("cam")
	for _, p := range segmentFiles(t, s, "cam") {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("after %d failed appends: segment %s is empty (%v)", fails, filepath.Base(p), err)
		}
	}
	st.mu.Lock()
	open := len(st.segs)
	st.mu.Unlock()
	if files := len(segmentFiles(t, s, "cam")); open > files {
		t.Errorf("%d segments kept in memory for %d files", open, files)
	}
	// Free space: the filler's files go once closed (Close closes them all).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenFS(t, dir, FSOptions{})
	if err := s.DeleteStream(ctx, "filler", ""); err != nil {
		t.Fatal(err)
	}
	acked = append(acked, appendOne(t, s, "cam", base.Add(time.Hour), base, 100_000))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenFS(t, dir, FSOptions{})
	defer s.Close()
	got, err := s.Range(ctx, "cam", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkMetas(t, "after a restart", got, acked)
	for _, m := range acked {
		if b, _ := readAll(t, s, "cam", m.Number); !bytes.Equal(b, payload("cam", m.Number, 100_000)) {
			t.Fatalf("fragment %d reads back other bytes", m.Number)
		}
	}
}
