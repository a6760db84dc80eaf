package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustOpenFS(t testing.TB, dir string, opts FSOptions) *FS {
	t.Helper()
	s, err := OpenFS(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func segmentFiles(t testing.TB, s *FS, stream string) []string {
	t.Helper()
	st, _, err := s.lookup(stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := filepath.Glob(filepath.Join(st.dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFSReopen checks what the suite's reopen cases cannot see: a clean reopen reports no
// repair, and stream names never reach the filesystem.
func TestFSReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpenFS(t, dir, FSOptions{})
	mustCreate(t, s, "..", 24)
	mustCreate(t, s, "b", 48)
	appendN(t, s, "..", 10, 3000)
	appendN(t, s, "b", 2, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenFS(t, dir, FSOptions{})
	defer s.Close()
	if r := s.Recovered(); len(r) != 0 {
		t.Fatalf("clean reopen reported %+v", r)
	}
	appendOne(t, s, "..", base.Add(time.Hour), base, 5)
	// Names never reach the filesystem: only hex ids under streams/.
	ents, _ := os.ReadDir(filepath.Join(dir, "streams"))
	if len(ents) != 2 {
		t.Fatalf("%d stream directories, want 2", len(ents))
	}
	for _, e := range ents {
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(e.Name()) {
			t.Fatalf("stream directory %q", e.Name())
		}
	}
}

func TestFSDeletedStreamLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpenFS(t, dir, FSOptions{})
	mustCreate(t, s, "x", 1)
	appendN(t, s, "x", 2, 10)
	st, _, _ := s.lookup("x")
	kept := t.TempDir()
	copyTree(t, st.dir, kept)
	if err := s.DeleteStream(t.Context(), "x", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stream directory survives delete: %v", err)
	}
	s.Close()
	copyTree(t, kept, st.dir) // as if the crash came between index commit and RemoveAll
	s = mustOpenFS(t, dir, FSOptions{})
	defer s.Close()
	if _, err := os.Stat(st.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover directory not removed on open: %v", err)
	}
	mustCreate(t, s, "x", 1)
	if got, _ := s.Range(t.Context(), "x", 0, 0); len(got) != 0 {
		t.Fatalf("re-created stream sees %v", numbers(got))
	}
}

func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crashFixture is a closed store with stream "s" holding fragments 1 and 2 (indexed) in one
// segment, plus a third record: indexed, or (unindexed) written to the segment by hand as if the
// crash came after its fdatasync and before its index commit.
type crashFixture struct {
	dir       string // pristine copy; tests copy it again before damaging it
	segRel    string // segment path relative to dir
	lastStart int64  // offset of the third record
	lastLen   int64  // its length, header included
	want      []FragmentMeta
}

const crashPayload = 40

func newCrashFixture(t *testing.T, unindexed bool) crashFixture {
	dir := t.TempDir()
	s := mustOpenFS(t, dir, FSOptions{})
	mustCreate(t, s, "s", 24)
	want := appendN(t, s, "s", 2, crashPayload)
	segs := segmentFiles(t, s, "s")
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	fi, _ := os.Stat(segs[0])
	start := fi.Size()
	third := FragmentMeta{Number: 3, ServerTime: base.Add(2 * time.Second), ProducerTime: base, Duration: time.Second, Size: crashPayload}
	if unindexed {
		if _, err := s.NextNumber(t.Context(), "s"); err != nil { // reserve 3
			t.Fatal(err)
		}
		data := payload("s", 3, crashPayload)
		rec := newRecordHeader(third, data).encode(nil)
		f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(append(rec, data...)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	} else {
		third = appendOne(t, s, "s", third.ServerTime, third.ProducerTime, crashPayload)
		third.Duration = 2 * time.Second
	}
	rel, _ := filepath.Rel(dir, segs[0])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return crashFixture{dir: dir, segRel: rel, lastStart: start, lastLen: recordHeaderSize + crashPayload, want: append(want, third)}
}

// damaged copies the fixture, applies fn to the segment file and reopens the store.
func (c crashFixture) damaged(t *testing.T, fn func(path string)) (*FS, *bytes.Buffer) {
	dir := t.TempDir()
	copyTree(t, c.dir, dir)
	fn(filepath.Join(dir, c.segRel))
	var logs bytes.Buffer
	s := mustOpenFS(t, dir, FSOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	return s, &logs
}

func TestFSCrashTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		unindexed bool
	}{
		{"unindexed tail", true},
		{"index ahead of data", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCrashFixture(t, tc.unindexed)
			for cut := c.lastStart; cut <= c.lastStart+c.lastLen; cut++ {
				s, logs := c.damaged(t, func(p string) {
					if err := os.Truncate(p, cut); err != nil {
						t.Fatal(err)
					}
				})
				whole := cut == c.lastStart+c.lastLen
				want := c.want[:2]
				if whole {
					want = c.want
				}
				got, err := s.Range(t.Context(), "s", 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				checkMetas(t, "after cut", got, want)
				for _, m := range want {
					readAll(t, s, "s", m.Number)
				}
				var cutBytes int64
				dropped, reindexed := 0, 0
				for _, r := range s.Recovered() {
					cutBytes += r.BytesCut
					dropped += r.Dropped
					reindexed += r.Reindexed
					if r.Stream != "s" || !strings.HasSuffix(r.Segment, c.segRel) || r.Reason == "" {
						t.Fatalf("cut %d: report %+v", cut, r)
					}
				}
				if wantCut := (cut - c.lastStart) % c.lastLen; cutBytes != wantCut {
					t.Fatalf("cut %d: reported %d bytes cut, want %d (%+v)", cut, cutBytes, wantCut, s.Recovered())
				}
				if wantDropped := btoi(!tc.unindexed && !whole); dropped != wantDropped {
					t.Fatalf("cut %d: %d entries dropped, want %d", cut, dropped, wantDropped)
				}
				if wantRe := btoi(tc.unindexed && whole); reindexed != wantRe {
					t.Fatalf("cut %d: %d re-indexed, want %d", cut, reindexed, wantRe)
				}
				if len(s.Recovered()) > 0 && !strings.Contains(logs.String(), "store recovery") {
					t.Fatalf("cut %d: recovery not logged", cut)
				}
				if fi, _ := os.Stat(filepath.Join(s.dir, c.segRel)); fi.Size() != c.lastStart && !whole {
					t.Fatalf("cut %d: segment is %d bytes, want %d", cut, fi.Size(), c.lastStart)
				}
				// The store goes on: the next fragment is numbered after everything seen.
				m := appendOne(t, s, "s", base.Add(time.Hour), base, 10)
				if m.Number <= 3 {
					t.Fatalf("cut %d: number %d reused", cut, m.Number)
				}
				s.Close()
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestFSCrashCorruptTail(t *testing.T) {
	t.Parallel()
	c := newCrashFixture(t, true)
	for i := range c.lastLen {
		s, _ := c.damaged(t, func(p string) { flipByte(t, p, c.lastStart+i) })
		got, _ := s.Range(t.Context(), "s", 0, 0)
		checkMetas(t, "after corruption", got, c.want[:2])
		r := s.Recovered()
		if len(r) != 1 || r[0].BytesCut != c.lastLen || r[0].Offset != c.lastStart {
			t.Fatalf("byte %d: reports %+v", i, r)
		}
		s.Close()
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestFSCrashSegmentMissing(t *testing.T) {
	t.Parallel()
	c := newCrashFixture(t, false)
	s, _ := c.damaged(t, func(p string) { os.Remove(p) })
	defer s.Close()
	if got, _ := s.Range(t.Context(), "s", 0, 0); len(got) != 0 {
		t.Fatalf("fragments of a missing segment: %v", numbers(got))
	}
	if r := s.Recovered(); len(r) != 1 || r[0].Dropped != 3 {
		t.Fatalf("reports %+v", r)
	}
}

// Damage inside the indexed part is not recovery's business; Open must refuse the bytes.
func TestFSOpenCorrupt(t *testing.T) {
	t.Parallel()
	for _, size := range []int{crashPayload, 17 << 20} { // 17 MiB: more than checksumFile maps at once
		dir := t.TempDir()
		s := mustOpenFS(t, dir, FSOptions{})
		mustCreate(t, s, "s", 24)
		ms := appendN(t, s, "s", 2, size)
		seg := segmentFiles(t, s, "s")[0]
		flipByte(t, seg, recordHeaderSize+int64(size)/2) // payload of 1
		flipByte(t, seg, recordHeaderSize+int64(size)+8) // header of 2
		rc, _, err := s.Open(t.Context(), "s", ms[0].Number)
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("size %d: corrupt payload: %v", size, err)
		}
		if _, _, err := s.Open(t.Context(), "s", ms[1].Number); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("size %d: corrupt header: %v", size, err)
		}
		// AppendPayload refuses the same bytes and leaves the caller's buffer as it was.
		prefix := []byte("keep")
		for i, m := range ms {
			b, _, err := s.AppendPayload(t.Context(), "s", m.Number, prefix)
			if !errors.Is(err, ErrCorrupt) || string(b) != "keep" {
				t.Fatalf("size %d: AppendPayload of corrupt record %d: %v, buffer %q", size, i, err, b[:min(len(b), 8)])
			}
		}
		s.Close()
	}
}

func TestFSSegmentRollAndRetention(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := base
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), MaxSegmentAge: time.Hour, now: func() time.Time { return clock }}
	s := mustOpenFS(t, dir, opts)
	ctx := t.Context()
	mustCreate(t, s, "s", 1)
	ms := appendN(t, s, "s", 7, 100) // segments: [1 2 3] [4 5 6] [7]
	if segs := segmentFiles(t, s, "s"); len(segs) != 3 {
		t.Fatalf("size roll: %d segments", len(segs))
	}
	clock = clock.Add(time.Hour) // age roll: the next record starts a new segment
	appendOne(t, s, "s", base.Add(2*time.Hour), base, 100)
	if segs := segmentFiles(t, s, "s"); len(segs) != 4 {
		t.Fatalf("age roll: %d segments", len(segs))
	}
	// Fragment 5 (server time base+4s) expires at base+1h+4s: segment [4 5 6] stays until 6 does.
	n, err := s.EnforceRetention(ctx, base.Add(time.Hour+5*time.Second))
	if err != nil || n != 3 {
		t.Fatalf("retention: %d, %v", n, err)
	}
	got, _ := s.Range(ctx, "s", 0, 0)
	if f := numbers(got); len(f) != 5 || f[0] != ms[3].Number {
		t.Fatalf("after retention: %v", f)
	}
	if segs := segmentFiles(t, s, "s"); len(segs) != 3 {
		t.Fatalf("segments after retention: %d", len(segs))
	}
	// Segments [4 5 6] and [7] expire; the active one with fragment 8 stays.
	kept := t.TempDir()
	st, _, _ := s.lookup("s")
	copyTree(t, st.dir, kept)
	n, err = s.EnforceRetention(ctx, base.Add(time.Hour+time.Minute))
	if err != nil || n != 4 {
		t.Fatalf("retention 2: %d, %v", n, err)
	}
	m := appendOne(t, s, "s", base.Add(3*time.Hour), base, 100)
	s.Close()
	// A crash after the purge commit but before the files went must not bring data back.
	for _, name := range []string{"0000000000000002.seg", "0000000000000003.seg"} {
		b, err := os.ReadFile(filepath.Join(kept, name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(st.dir, name), b, 0o600)
	}
	s = mustOpenFS(t, dir, opts)
	defer s.Close()
	got, _ = s.Range(ctx, "s", 0, 0)
	if f := numbers(got); len(f) != 2 || f[1] != m.Number {
		t.Fatalf("after reopen: %v (reports %+v)", f, s.Recovered())
	}
	if _, err := os.Stat(filepath.Join(st.dir, "0000000000000002.seg")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("purged segment file back after reopen: %v", err)
	}
	// Expiring everything takes the segment being appended to as well; appends go on in a new one.
	n, err = s.EnforceRetention(ctx, base.Add(5*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("retention 3: %d, %v", n, err)
	}
	if segs := segmentFiles(t, s, "s"); len(segs) != 0 {
		t.Fatalf("segments left: %v", segs)
	}
	m = appendOne(t, s, "s", base.Add(6*time.Hour), base, 100)
	if got, _ := s.Range(ctx, "s", 0, 0); len(got) != 1 || got[0].Number != m.Number {
		t.Fatalf("after full purge: %v", numbers(got))
	}
}

// TestFSPrepare checks that Prepare readies a stream for its first append (numbers reserved and
// persisted, the segment file created) without changing what is stored, and that an empty
// prepared segment is neither rolled over by age nor left behind by a restart.
func TestFSPrepare(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := base
	opts := FSOptions{MaxSegmentAge: time.Hour, now: func() time.Time { return clock }}
	s := mustOpenFS(t, dir, opts)
	ctx := t.Context()
	mustCreate(t, s, "s", 1)
	mustCreate(t, s, "idle", 1)
	mustCreate(t, s, "live", 0)
	for range 2 { // idempotent
		if err := s.Prepare(ctx, "s"); err != nil {
			t.Fatal(err)
		}
	}
	if segs := segmentFiles(t, s, "s"); len(segs) != 1 {
		t.Fatalf("after Prepare: %d segment files, want 1", len(segs))
	}
	var hwm uint64
	if err := s.view("s", func(_ *fsStream, b *bolt.Bucket) error { hwm = getU64(b.Get(keyHWM)); return nil }); err != nil {
		t.Fatal(err)
	}
	if hwm < 2 {
		t.Fatalf("high-water mark after Prepare: %d, want numbers reserved", hwm)
	}
	clock = clock.Add(2 * time.Hour) // older than MaxSegmentAge, but empty: the append uses it
	m := appendOne(t, s, "s", clock, clock, 100)
	if segs := segmentFiles(t, s, "s"); len(segs) != 1 {
		t.Fatalf("after the first append: %d segment files, want 1", len(segs))
	}
	got, err := s.Range(ctx, "s", 0, 0)
	if err != nil || len(got) != 1 || got[0].Number != m.Number {
		t.Fatalf("Range: %v, %v", got, err)
	}
	if err := s.Prepare(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, s, "live"); len(segs) != 0 {
		t.Fatalf("stream without retention: %d segment files", len(segs))
	}
	if err := s.Prepare(ctx, "nope"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("unknown stream: %v", err)
	}
	if err := s.Prepare(ctx, "idle"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(ctx, "s"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	s = mustOpenFS(t, dir, opts)
	defer s.Close()
	if segs := segmentFiles(t, s, "idle"); len(segs) != 0 {
		t.Fatalf("prepared, never written: %d segment files after reopening", len(segs))
	}
	if n, err := s.NextNumber(ctx, "s"); err != nil || n <= m.Number {
		t.Fatalf("NextNumber after reopen: %d, %v (last %d)", n, err, m.Number)
	}
	got, err = s.Range(ctx, "s", 0, 0)
	if err != nil || len(got) != 1 || got[0].Number != m.Number {
		t.Fatalf("Range after reopen: %v, %v", got, err)
	}
}

// TestFSRetentionAfterClockJump: a segment whose fragments got a server time far ahead (the
// server's clock was ahead for a while, then set right) does not hold back the retention of the
// segments written after it. Retention deleted only leading segments and stopped at the first
// one not expired, so the stream kept everything written after the jump until the wrong time
// came (a year later here) and filled the disk.
func TestFSRetentionAfterClockJump(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := FSOptions{MaxSegmentBytes: 1} // a segment per record
	s := mustOpenFS(t, dir, opts)
	ctx := t.Context()
	mustCreate(t, s, "s", 1)
	ahead := appendOne(t, s, "s", base.Add(365*24*time.Hour), base, 100)
	after := appendN(t, s, "s", 3, 100) // server times base, base+1s, base+2s
	if n, err := s.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil || n != len(after) {
		t.Fatalf("retention: %d, %v; want the %d expired fragments", n, err, len(after))
	}
	check := func(s *FS, what string) {
		t.Helper()
		got, err := s.Range(ctx, "s", 0, 0)
		if err != nil || len(got) != 1 || got[0].Number != ahead.Number {
			t.Fatalf("%s: fragments %v, %v; want only %d, not expired", what, numbers(got), err, ahead.Number)
		}
		if segs := segmentFiles(t, s, "s"); len(segs) != 1 {
			t.Fatalf("%s: %d segment files, want 1", what, len(segs))
		}
	}
	check(s, "after retention")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenFS(t, dir, opts)
	defer s.Close()
	check(s, "after reopening")
	m := appendOne(t, s, "s", base.Add(3*time.Hour), base, 100)
	if n, err := s.EnforceRetention(ctx, base.Add(366*24*time.Hour)); err != nil || n != 2 {
		t.Fatalf("retention a year later: %d, %v; want 2 (%d and %d)", n, err, ahead.Number, m.Number)
	}
}

// A data directory whose index.db is gone (a backup restored without it, a file moved away) keeps
// its streams' files: OpenFS refuses to start on it, naming the file, instead of taking every
// stream directory for a deleted stream's leftovers and removing them all.
func TestFSMissingIndexKeepsStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpenFS(t, dir, FSOptions{})
	mustCreate(t, s, "cam", 24)
	appendN(t, s, "cam", 3, 1000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "index.db")); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenFS(dir, FSOptions{}); err == nil || !strings.Contains(err.Error(), "index.db") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("OpenFS without index.db: %v, want an error naming index.db", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "streams")); len(ents) != 1 {
		t.Fatalf("%d stream directories left, want the 1 written", len(ents))
	}
	if _, err := os.Stat(filepath.Join(dir, "index.db")); !os.IsNotExist(err) {
		t.Errorf("OpenFS left an empty index.db behind (%v): the next start would delete the streams", err)
	}
	// An empty directory, or one whose streams/ is empty, opens as before.
	s = mustOpenFS(t, t.TempDir(), FSOptions{})
	s.Close()
}

// TestFSOpenDuringRetention: a fragment being read (Open, as GetMedia or GetClip hold it while
// they send it) neither stops retention from removing its segment nor loses its bytes. On
// Windows the removal failed while the reader had the file open: the segment, already gone from
// the index, stayed on disk until a restart, and the pass stopped there.
func TestFSOpenDuringRetention(t *testing.T) {
	t.Parallel()
	opts := FSOptions{MaxSegmentBytes: 3 * (recordHeaderSize + 100), MaxSegmentAge: time.Hour}
	s := mustOpenFS(t, t.TempDir(), opts)
	defer s.Close()
	ctx := t.Context()
	mustCreate(t, s, "s", 1)
	ms := appendN(t, s, "s", 4, 100) // segments: [1 2 3] [4]
	r, _, err := s.Open(ctx, "s", ms[0].Number)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Fragment 3 (server time base+2s) expires at base+1h+2s: segment [1 2 3] goes, [4] stays.
	n, err := s.EnforceRetention(ctx, base.Add(time.Hour+2500*time.Millisecond))
	if err != nil || n != 3 {
		t.Fatalf("retention while fragment %d is read: %d fragments, %v", ms[0].Number, n, err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload("s", ms[0].Number, 100)) {
		t.Fatalf("fragment read across retention: %d bytes, not its payload", len(got))
	}
	// Once read (where a removed file keeps its name until its last handle closes: Windows
	// without POSIX deletion, FAT).
	r.Close()
	if segs := segmentFiles(t, s, "s"); len(segs) != 1 {
		t.Fatalf("segment files after retention: %v", segs)
	}
}

// TestFSOpenDuringDeleteStream: DeleteStream removes the stream's files while one of its
// fragments is being read, and the reader still reads it.
func TestFSOpenDuringDeleteStream(t *testing.T) {
	t.Parallel()
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	defer s.Close()
	ctx := t.Context()
	mustCreate(t, s, "s", 1)
	ms := appendN(t, s, "s", 2, 100)
	st, _, err := s.lookup("s")
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := s.Open(ctx, "s", ms[1].Number)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := s.DeleteStream(ctx, "s", ""); err != nil {
		t.Fatalf("DeleteStream while fragment %d is read: %v", ms[1].Number, err)
	}
	if _, err := os.Stat(st.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stream directory after DeleteStream: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload("s", ms[1].Number, 100)) {
		t.Fatalf("fragment read across DeleteStream: %d bytes, not its payload", len(got))
	}
}

// TestFSDeleteStreamFilesStay: a deleted stream whose files cannot be removed (a file held open
// where the system forbids removing it, leftovers on a network filesystem) is deleted all the
// same: DeleteStream succeeds, the stream is gone, the store opens again and removes the files
// then. DeleteStream returned the removal's error after the delete had happened (the API
// answered 500, and a client's retry got ResourceNotFoundException), and OpenFS refused to
// start over files it could not remove.
func TestFSDeleteStreamFilesStay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	errBusy := errors.New("device or resource busy")
	failing := func(string) error { return errBusy }
	s := mustOpenFS(t, dir, FSOptions{removeAll: failing})
	mustCreate(t, s, "cam", 24)
	ctx := context.Background()
	n, err := s.NextNumber(ctx, "cam")
	if err != nil {
		t.Fatal(err)
	}
	if err := Append(ctx, s, "cam", FragmentMeta{Number: n, ServerTime: time.Now()}, payload("cam", n, 10)); err != nil {
		t.Fatal(err)
	}
	st, _, err := s.lookup("cam")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteStream(ctx, "cam", ""); err != nil {
		t.Fatalf("DeleteStream with files that cannot be removed: %v, want nil (the stream is deleted)", err)
	}
	if _, err := s.GetStream(ctx, "cam"); !errors.Is(err, ErrStreamNotFound) {
		t.Errorf("GetStream after DeleteStream: %v, want ErrStreamNotFound", err)
	}
	if _, err := os.Stat(st.dir); err != nil {
		t.Fatalf("the stream's directory: %v, want it left (removal failed)", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Still failing: the store opens, with the leftovers in place.
	s = mustOpenFS(t, dir, FSOptions{removeAll: failing})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.dir); err != nil {
		t.Fatalf("the stream's directory: %v, want it left", err)
	}
	// Removable again: the next start removes them.
	s = mustOpenFS(t, dir, FSOptions{})
	if _, err := os.Stat(st.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the deleted stream's directory after a start: %v, want it removed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFSWrittenCacheForgetsRemoved: the written cache stops counting the ranges of segment files
// that retention or DeleteStream removed. Counted, they made its drops reach live media early,
// and each kept an entry for good while under the budget: a stream created, written to once and
// deleted left about 125 bytes of heap behind (5,000 such streams: 5,000 entries).
func TestFSWrittenCacheForgetsRemoved(t *testing.T) {
	t.Parallel()
	s := mustOpenFS(t, t.TempDir(), FSOptions{MaxSegmentBytes: 64 << 10})
	mustCreate(t, s, "a", 24)
	mustCreate(t, s, "b", 24)
	const record = 64<<10 - recordHeaderSize // one record per segment
	appendN(t, s, "a", 8, record)
	appendN(t, s, "b", 4, record)
	counted := func() (ranges int, total int64, paths []string) {
		s.written.mu.Lock()
		defer s.written.mu.Unlock()
		for _, r := range s.written.ranges {
			paths = append(paths, r.path)
		}
		return len(s.written.ranges), s.written.total, paths
	}
	// The ranges are counted after the acks: wait for all twelve segments'.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, total, _ := counted(); total == 12<<16 {
			break
		}
		if time.Now().After(deadline) {
			_, total, _ := counted()
			t.Fatalf("written cache counts %d bytes, want the 12 segments' %d", total, 12<<16)
		}
	}
	if err := s.DeleteStream(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	if n, total, _ := counted(); n != 4 || total != 4<<16 {
		t.Errorf("after deleting a: %d ranges, %d bytes counted; want b's 4 segments, %d bytes", n, total, 4<<16)
	}
	// Retention two days on removes b's sealed segments (the active one stays).
	if _, err := s.EnforceRetention(context.Background(), time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, _, paths := counted()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a counted range of %s: %v, want only files that exist", p, err)
		}
	}
	if len(paths) >= 4 {
		t.Errorf("%d ranges counted after retention removed b's old segments, want fewer than 4", len(paths))
	}
}
