package store

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// residentPages returns how many of the file's pages are in the page cache, and how many pages
// it has (mincore(2) of a read-only mapping: mapping it brings nothing in).
func residentPages(t *testing.T, path string) (resident, pages int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Fatalf("%s is empty", path)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", path, errno)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, len(vec)
}

// onDisk skips t when dir is on tmpfs, whose pages are the files themselves: nothing is dropped
// there, and nothing needs to be.
func onDisk(t *testing.T, dir string) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == 0x01021994 { // TMPFS_MAGIC
		t.Skipf("%s is on tmpfs, where the page cache holds the files: set TMPDIR to a disk", dir)
	}
}

// The FS store drops from the page cache what its appends wrote beyond the newest
// WrittenCacheBytes, once on disk: with a 1 MiB budget and 64 KiB segments, of 4 MiB appended
// the store drops the 48 oldest segments, which then have no page left in memory, and every
// record still reads back intact. With a negative budget it drops nothing.
//
// What it drops is counted from the store (writtenCache.dropped), what is gone from the page cache
// is read with mincore; that the newest are still in memory is not checked there: the kernel may
// reclaim pages on its own (this VM runs DAMON's pageout on physical memory regions it has seen
// idle for a minute, up to 128 MB a second, and a region can hold pages written a moment ago; a
// full test run once found 63 of 64 segments whole where nothing was dropped).
func TestFSWrittenCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		budget int64
	}{{"1MiB", 1 << 20}, {"all", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			onDisk(t, dir)
			opts := FSOptions{MaxSegmentBytes: 64 << 10, WrittenCacheBytes: tc.budget}
			s := mustOpenFS(t, dir, opts)
			mustCreate(t, s, "cam", 24)
			// One record per segment. The drops follow the acks: Close waits for them.
			metas := appendN(t, s, "cam", 64, 64<<10-recordHeaderSize)
			s.Close()
			s.written.mu.Lock()
			dropped := s.written.dropped
			s.written.mu.Unlock()
			segs, err := filepath.Glob(filepath.Join(dir, "streams", "*", "*"))
			if err != nil || len(segs) != 64 {
				t.Fatalf("%d segment files (%v), want 64", len(segs), err)
			}
			cold := 0 // segments with no page cached
			for _, path := range segs {
				if resident, _ := residentPages(t, path); resident == 0 {
					cold++
				}
			}
			switch {
			case tc.budget < 0 && dropped != 0:
				t.Errorf("%d bytes dropped from the page cache with nothing to drop", dropped)
			case tc.budget >= 0 && dropped != 48*64<<10:
				// 16 segments are 1 MiB: the newest 16 are kept, the rest dropped.
				t.Errorf("%d bytes dropped, want the 48 oldest segments' %d", dropped, 48*64<<10)
			case tc.budget >= 0 && cold < 48:
				t.Errorf("%d segments out of the page cache; want at least the 48 dropped", cold)
			}
			s = mustOpenFS(t, dir, opts)
			for _, m := range metas {
				got, _ := readAll(t, s, "cam", m.Number)
				if !bytes.Equal(got, payload("cam", m.Number, int(m.Size))) {
					t.Fatalf("fragment %d reads back different after its pages were dropped", m.Number)
				}
			}
		})
	}
}

// Records that do not end on a page boundary: each synced range shares its first page with the
// range before. Once dropped, an old segment keeps no page in the page cache, the pages that
// straddle two records included (else every fdatasync left a page behind, and the page cache
// grew by one page per append, with no bound).
func TestFSWrittenCacheUnaligned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	onDisk(t, dir)
	s := mustOpenFS(t, dir, FSOptions{MaxSegmentBytes: 64 << 10, WrittenCacheBytes: 1 << 20})
	mustCreate(t, s, "cam", 24)
	appendN(t, s, "cam", 6*64, 10000) // 6 records a segment, each synced on its own
	s.Close()                         // the drops follow the acks: Close waits for them
	segs, err := filepath.Glob(filepath.Join(dir, "streams", "*", "*"))
	if err != nil || len(segs) < 60 {
		t.Fatalf("%d segment files (%v), want 64", len(segs), err)
	}
	kept, cold := 0, 0
	for _, path := range segs {
		resident, _ := residentPages(t, path)
		kept += resident
		if resident == 0 {
			cold++
		}
	}
	// 1 MiB is 256 pages, and a few for the ranges counted but not whole in it.
	if kept > 256+32 || cold < len(segs)-18 {
		t.Errorf("%d pages of %d segments left in the page cache, %d segments without any; want about 256, and %d without any",
			kept, len(segs), cold, len(segs)-17)
	}
}
