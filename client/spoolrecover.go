package client

// Opening a spool: what an earlier process left is checked, cut where torn, and queued again.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/openkvs/kvs/internal/fsync"
)

// recover reads the acked mark and the segments, cuts torn records, removes what is final, and
// checks the stream name.
func (s *Spool) recover() error {
	s.acked = readAcked(filepath.Join(s.cfg.Dir, spoolAckedFile))
	s.saved = s.acked
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return err
	}
	// A segment is named by the sequence number of its first record (fixed-width hex): the one
	// after it says where its records end, even when a damaged record hides them.
	type segFile struct {
		name  string
		first uint64
	}
	var files []segFile
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), spoolSuffix)
		if first, perr := strconv.ParseUint(name, 16, 64); ok && len(name) == 16 && perr == nil && e.Type().IsRegular() {
			files = append(files, segFile{e.Name(), first})
		}
	}
	slices.SortFunc(files, func(a, b segFile) int { return cmp.Compare(a.first, b.first) })
	prev := uint64(0)
	for i, f := range files {
		end := uint64(0) // none: the last segment
		if i+1 < len(files) {
			end = files[i+1].first
		}
		g, err := s.recoverSegment(filepath.Join(s.cfg.Dir, f.name), f.first, end, prev)
		if err != nil {
			return err
		}
		if g == nil {
			continue
		}
		prev = g.last
		s.segs = append(s.segs, g)
	}
	s.nextSeq = max(prev, s.acked) + 1
	s.cursor = s.acked + 1
	for _, g := range s.segs {
		s.stats.Bytes += g.size
		n, _ := s.pendingIn(g)
		s.stats.Fragments += n
	}
	s.stats.Recovered = s.stats.Fragments
	s.removeFinal()
	if err := s.checkStream(); err != nil {
		return err
	}
	// The last segment is not reopened for appends: a new one starts with the next record.
	return nil
}

// recoverSegment scans one segment file, whose first record is first and whose next segment
// starts at end (0: it is the last one); it returns nil for a file that holds nothing to keep (it
// is removed).
func (s *Spool) recoverSegment(path string, first, end, after uint64) (*spoolSegment, error) {
	last := end == 0
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sc, err := scanSegment(f, fi.Size(), last, after, s.acked)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if sc.Cut != nil {
		if err := f.Truncate(sc.End); err != nil {
			return nil, err
		}
		if err := fsync.Data(f); err != nil {
			return nil, err
		}
		s.stats.Cut += fi.Size() - sc.End
		// Only the segment written last can be torn by a crash: its cut record was never
		// spooled. A segment with a later one was synced whole: what follows its damaged record
		// was spooled, and is lost (a damaged disk), as the records next cannot read back.
		lost := uint64(0)
		if from := max(first, sc.Last+1, s.acked+1); !last && end > from {
			lost = end - from
		}
		s.stats.Corrupt += int(lost) //nolint:gosec // at most a segment's records
		if lost > 0 {
			s.notice("spool: %s: unreadable record at offset %d (%v): the %d fragments from there to the end of the file are lost; the %d whole fragments before it are kept",
				path, sc.End, sc.Cut, lost, sc.Count)
		} else {
			s.notice("spool: %s: cut %d bytes at offset %d (%v); the %d whole fragments before it are kept",
				path, fi.Size()-sc.End, sc.End, sc.Cut, sc.Count)
		}
	}
	if sc.Count == 0 || sc.Last <= s.acked {
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, err
		}
		return nil, nil
	}
	if s.stats.RecoveredFrom.IsZero() {
		s.stats.RecoveredFrom = sc.Oldest
	}
	if !sc.Newest.IsZero() {
		s.stats.RecoveredTo = sc.Newest
	}
	return &spoolSegment{path: path, first: sc.First, last: sc.Last, count: sc.Count, size: sc.End}, nil
}

// checkStream records the stream name in a new spool, and refuses a spool that holds fragments of
// another stream.
func (s *Spool) checkStream() error {
	path := filepath.Join(s.cfg.Dir, spoolStream)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && string(b) == s.cfg.Stream:
		return nil
	case err == nil && len(b) == 0:
		// Written but not on disk yet when the power went (spools made before the write was
		// synced): no name recorded, as if missing.
	case err == nil && s.stats.Fragments > 0:
		return fmt.Errorf("it holds %d fragments of stream %q, not %q: send them with --stream-name %s first, or use another spool directory",
			s.stats.Fragments, string(b), s.cfg.Stream, string(b))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return writeFileAtomic(path, []byte(s.cfg.Stream), true)
}

// readAcked reads the acked mark; a missing or damaged file reads as 0 (everything is sent again:
// at least once).
func readAcked(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}
