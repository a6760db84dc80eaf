package client

// The sending side of a Spool (spool.go): the record a Producer sends next, in order, and what
// the server's acks release from disk.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/record"
)

// next returns the oldest record not handed out yet, waiting for one; queued is how many more
// records the spool holds after it (0: it is the newest, the live edge). It returns io.EOF once
// the spool is sealed and every record was handed out, and ctx.Err() when ctx is done. The
// record's Body comes from internal/bufpool: the caller owns it.
func (s *Spool) next(ctx context.Context) (rec spoolRecord, queued int, err error) {
	defer s.flushNotices()
	for {
		s.mu.Lock()
		g, off, ok := s.locate()
		if !ok {
			sealed, ch := s.sealed || s.closed, s.changed
			s.mu.Unlock()
			if sealed {
				return spoolRecord{}, 0, io.EOF
			}
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return spoolRecord{}, 0, ctx.Err()
			}
		}
		path, limit := g.path, g.size
		s.mu.Unlock()

		rec, n, err := readSpoolFile(path, off, limit)
		s.mu.Lock()
		if s.curSeg != g || s.curOff != off { //nolint:gocritic // compared after the lock was released
			// The segment was dropped while it was read: start again at the oldest left.
			s.mu.Unlock()
			bufpool.Put(rec.Body)
			continue
		}
		if err != nil && !record.IsDamage(err) {
			s.mu.Unlock()
			return spoolRecord{}, 0, fmt.Errorf("spool %s: %w", path, err)
		}
		if err == nil && rec.Seq != s.curSeq {
			err = fmt.Errorf("%w: %d where %d was expected", record.ErrSequence, rec.Seq, s.curSeq)
		}
		if errors.Is(err, record.ErrPayloadCRC) && rec.Seq == s.curSeq {
			// Only the payload is damaged: the header, whole, frames the records after it.
			s.curOff += n
			s.curSeq++
			skipped := 0
			if _, done := s.doneSet[rec.Seq]; !done && rec.Seq >= s.cursor && rec.Seq > s.acked {
				skipped = 1
				s.doneSet[rec.Seq] = struct{}{}
				s.stats.Fragments--
				s.stats.Corrupt++
			}
			s.cursor = max(s.cursor, rec.Seq+1)
			s.advance()
			s.mu.Unlock()
			if skipped > 0 {
				s.notice("spool: %s: unreadable record at offset %d (%v): skipped its fragment", path, off, err)
			}
			continue
		}
		if err != nil {
			// A damaged record (a bad disk: appends were synced whole): the rest of this segment
			// cannot be trusted to be framed, so it is skipped, and told.
			bufpool.Put(rec.Body)
			skipped := s.skipSegment(g)
			s.stats.Corrupt += skipped
			s.mu.Unlock()
			s.notice("spool: %s: unreadable record at offset %d (%v): skipped the %d fragments from there to the end of the file", path, off, err, skipped)
			continue
		}
		s.curOff += n
		s.curSeq++
		if rec.Seq < s.cursor || rec.Seq <= s.acked { // final before a restart
			s.mu.Unlock()
			bufpool.Put(rec.Body)
			continue
		}
		s.cursor = rec.Seq + 1
		queued = int(s.nextSeq - s.cursor) //nolint:gosec // sequence numbers only grow
		s.mu.Unlock()
		return rec, queued, nil
	}
}

// readSpoolFile reads the record at off of the segment file path, whose whole records end at
// limit.
func readSpoolFile(path string, off, limit int64) (spoolRecord, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return spoolRecord{}, 0, err
	}
	defer f.Close()
	return readSpoolRecord(f, off, limit, true)
}

// locate returns the segment and offset of the cursor's record, moving the cursor past segments
// that are read to their end; ok is false when no record is there yet. s.mu is held.
func (s *Spool) locate() (g *spoolSegment, off int64, ok bool) {
	for {
		if s.curSeg == nil {
			i := slices.IndexFunc(s.segs, func(g *spoolSegment) bool { return g.last >= s.cursor && g.count > 0 })
			if i < 0 {
				return nil, 0, false
			}
			s.curSeg, s.curOff, s.curSeq = s.segs[i], 0, s.segs[i].first
			if g := s.curSeg; g.resumeOff > 0 {
				s.curOff, s.curSeq = g.resumeOff, g.resumeSeq // not the damaged record again
			}
			s.cursor = max(s.cursor, s.curSeg.first)
		}
		g := s.curSeg
		if s.curOff < g.size {
			return g, s.curOff, true
		}
		if s.active != nil && g == s.segs[len(s.segs)-1] {
			return nil, 0, false // at the live edge: wait for the next append
		}
		s.curSeg = nil // read to its end: the next segment
		s.cursor = max(s.cursor, g.last+1)
	}
}

// skipSegment moves the cursor past the end of g and counts the records skipped. s.mu is held.
func (s *Spool) skipSegment(g *spoolSegment) int {
	n := 0
	for q := s.cursor; q <= g.last; q++ {
		if _, done := s.doneSet[q]; !done && q > s.acked {
			n++
			s.doneSet[q] = struct{}{}
		}
	}
	s.stats.Fragments -= n
	s.cursor = g.last + 1
	s.curSeg = nil
	// The segment may be the one appends go to: its next record starts at its size now (a record
	// being written meanwhile too: append took its offset, and its number, before letting go).
	g.resumeOff, g.resumeSeq = g.size, g.last+1
	s.advance()
	return n
}

// done marks the record seq final (stored, or failed for good): it leaves the spool. Segments
// whose records are all final are removed, and the acked mark is written.
func (s *Spool) done(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.acked || len(s.segs) == 0 || seq < s.segs[0].first {
		return // dropped meanwhile, or told twice
	}
	if _, dup := s.doneSet[seq]; dup {
		return
	}
	s.doneSet[seq] = struct{}{}
	s.stats.Fragments--
	s.advance()
}

// advance moves acked over the final records, removes the segments that are all final, and
// writes the acked mark. s.mu is held.
func (s *Spool) advance() {
	for {
		if _, ok := s.doneSet[s.acked+1]; ok {
			delete(s.doneSet, s.acked+1)
			s.acked++
			continue
		}
		// Nothing below the oldest segment is left to wait for.
		if len(s.segs) > 0 && s.acked+1 < s.segs[0].first && s.acked+1 < s.cursor {
			s.acked = s.segs[0].first - 1
			continue
		}
		break
	}
	s.removeFinal()
	if time.Since(s.savedAt) >= ackedEvery {
		s.saveAcked()
	}
}

// ackedEvery is how often at most the acked mark is written while acks come (and at Close): each
// write of it creates, writes and renames a file (not synced, writeFileAtomic). A crash loses at
// most the last second of it, and what was acknowledged in that second is sent again (KVS stores
// it twice): a fragment or two of a live camera, but up to a second's worth of acks while a
// backlog drains at link speed. Writing the mark on every ack would make those few, at the price
// of a file created and renamed per fragment, which the flash cards of edge devices pay in wear.
const ackedEvery = time.Second

// saveAcked writes the acked mark, when it moved. s.mu is held.
func (s *Spool) saveAcked() {
	if s.acked == s.saved {
		return
	}
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], s.acked)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	if err := writeFileAtomic(filepath.Join(s.cfg.Dir, spoolAckedFile), b[:], false); err != nil {
		s.noticeLocked("spool: writing %s: %v (the fragments after %d will be sent again)", spoolAckedFile, err, s.saved)
		return
	}
	s.saved, s.savedAt = s.acked, time.Now()
}

// removeFinal removes the segments whose records are all final. The one appends go to goes only
// once it holds finalRollBytes (or at Close), and the next append starts a new one: creating a
// file and syncing its directory for every fragment of a live stream, acknowledged as fast as it
// comes, cost more than the fragment's own write and fdatasync. s.mu is held.
func (s *Spool) removeFinal() {
	for len(s.segs) > 0 {
		g := s.segs[0]
		if g.last > s.acked || g.count == 0 || g == s.writing {
			return
		}
		if len(s.segs) == 1 && s.active != nil {
			if g.size < finalRollBytes && !s.closed {
				return
			}
			s.active.Close()
			s.active = nil
		}
		s.removeSegment(g)
	}
}
