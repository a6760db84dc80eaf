package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Why a purge deletes segments: the reason label of the deletion metrics and logs.
const (
	reasonRetention = "retention"
	reasonDiskQuota = "disk_quota"
	reasonStreamCap = "stream_cap"
)

// EnforceRetention implements Store. For each stream it deletes the segments whose newest
// fragment's server time is before now - RetentionHours, together with their index entries (an
// older segment that is not expired, its server times ahead of the later ones', does not keep
// them); a fragment therefore outlives its retention by up to one segment's span (MaxSegmentAge,
// default 1 h). A segment with appends still being committed is kept for the next run, with
// those after it. The index commit comes first: files left by a crash right after it are removed by
// OpenFS rather than brought back. The pass then applies the byte caps (kvs:max-bytes, the disk
// quota) that appends apply as they go, for caps lowered since; what those delete is not in the
// count.
func (s *FS) EnforceRetention(ctx context.Context, now time.Time) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	type job struct {
		st     *fsStream
		cutoff time.Time
	}
	var jobs []job
	s.mu.RLock()
	for _, st := range s.streams {
		jobs = append(jobs, job{st, retentionCutoff(now, st.info.RetentionHours)})
	}
	s.mu.RUnlock()
	total := 0
	var errs []error
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		cut := timeToNanos(j.cutoff)
		n, _, err := s.purge(ctx, j.st, func(_ uint64, info segmentInfo, _ int64) bool { return info.MaxServer < cut }, reasonRetention, true)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("retention %s: %w", j.st.info.Name, err))
		}
		if limit := j.st.maxBytes.Load(); limit > 0 {
			s.trimStream(j.st, limit)
		}
	}
	s.makeRoomOnDisk(0)
	return total, errors.Join(errs...)
}

// purge deletes the stream's leading segments, oldest first, for as long as want says so (given
// each one's sequence number, index summary and file size) and no append to it is still being
// committed; with anywhere, every segment want picks and no append holds, leading or not
// (retention: a segment whose fragments got server times ahead of the later ones', the clock
// having been ahead, must not keep the expired segments after it). It returns the fragments and
// bytes deleted; the deletions are counted under reason, and logged unless they are retention's
// (the server logs those in sum).
//
// The segments are chosen under st.mu, and the stream's active segment, if chosen, is detached
// there, so no later append writes to one of them. Each step then takes st.mu again: the stream's
// appends go on between the steps (one holding it for all of them, a month's retention decrease
// at a time, stalled a live producer's PutMedia and its acks for seconds:
// TestFSPurgeLetsAppendsInBetweenSteps). When ctx ends, the purge stops after the step it is in
// (an UpdateDataRetention decrease purges for a bounded time; the retention passes do the rest).
func (s *FS) purge(ctx context.Context, st *fsStream, want func(seq uint64, info segmentInfo, size int64) bool, reason string, anywhere bool) (int, int64, error) {
	segs, err := s.purgeChoose(st, want, anywhere)
	if err != nil || len(segs) == 0 {
		return 0, 0, err
	}
	all := segs
	removed, freed := 0, int64(0)
	// In steps of about purgeBatch fragments (purgeBatchFragments says why), each committed
	// before its files go, so every step leaves what a whole purge stopped there would.
	batch := s.opts.purgeBatch
	if batch <= 0 {
		batch = purgeBatchFragments
	}
	for len(segs) > 0 {
		n, count := 1, segs[0].info.Count
		for n < len(segs) && count+segs[n].info.Count <= uint64(batch) {
			count += segs[n].info.Count
			n++
		}
		step := segs[:n]
		segs = segs[n:]
		removedPaths := make(map[string]bool, len(step))
		r, f, stop, err := s.purgeStep(st, step, removedPaths)
		s.written.forget(func(path string) bool { return removedPaths[path] })
		removed += r
		freed += f
		if s.opts.afterPurgeCommit != nil {
			s.opts.afterPurgeCommit()
		}
		if err != nil {
			s.metrics.deleted(reason, removed, freed)
			return removed, freed, err
		}
		if stop {
			break
		}
		if err := ctx.Err(); err != nil && len(segs) > 0 {
			s.metrics.deleted(reason, removed, freed)
			return removed, freed, err
		}
	}
	s.metrics.deleted(reason, removed, freed)
	if reason != reasonRetention && removed > 0 {
		last := all[len(all)-1]
		s.log.Info("store: deleted the oldest fragments of a stream for a byte cap", "reason", reason,
			"stream", st.info.Name, "segments", len(all), "fragments", removed, "bytes", freed,
			"first_fragment", all[0].info.First, "last_fragment", last.info.Last,
			"newest_server_time", nanosToTime(last.info.MaxServer))
	}
	return removed, freed, nil
}

// purgeChoose returns the segments purge deletes (see there), in sequence order, and detaches
// the stream's active segment when it is one of them.
func (s *FS) purgeChoose(st *fsStream, want func(seq uint64, info segmentInfo, size int64) bool, anywhere bool) ([]doomed, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.deleted {
		return nil, nil
	}
	var segs []doomed
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			return nil
		}
		c := b.Bucket(bucketSegs).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			info, err := decodeSegmentInfo(v)
			if err != nil {
				return err
			}
			seq := getU64(k)
			if g := st.segs[seq]; g != nil && g.pending.Load() > 0 {
				break // its appends, and those after it, are still being committed
			}
			size := s.segmentSize(st, seq)
			if !want(seq, info, size) {
				if anywhere {
					continue
				}
				break
			}
			segs = append(segs, doomed{seq, info, size})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, g := range segs {
		if st.active != nil && st.active.seq == g.seq {
			// All its records are indexed (pending is 0): the next append opens a new segment
			// rather than add a record the purge would not know of, between two of its steps.
			st.active = nil
		}
	}
	return segs, nil
}

// purgeStep deletes segments (all chosen by purgeChoose, in sequence order) from the index in
// one transaction, then their files, and returns the fragments and bytes deleted, and whether the
// purge must stop there: the stream was deleted or the store closed since, or a segment got
// appends (none can: purgeChoose detached the active one). A segment no longer in the index (a
// concurrent purge of the stream, a byte cap's or the disk quota's, took it) is left to that one.
// Removed files' paths are added to removedPaths.
func (s *FS) purgeStep(st *fsStream, segs []doomed, removedPaths map[string]bool) (int, int64, bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.deleted {
		return 0, 0, true, nil
	}
	if s.closed.Load() {
		// Close takes st.mu before it closes the index: seen open here, it stays open until
		// this step is done.
		return 0, 0, true, ErrClosed
	}
	stop := false
	for i, g := range segs {
		if seg := st.segs[g.seq]; seg != nil && (seg.pending.Load() > 0 || st.active == seg) {
			segs, stop = segs[:i], true
			break
		}
	}
	removed := 0
	var gone []doomed
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			stop = true // deleted: DeleteStream sets st.deleted next
			return nil
		}
		sb := b.Bucket(bucketSegs)
		for _, g := range segs {
			v := sb.Get(u64(g.seq))
			if v == nil {
				continue
			}
			info, err := decodeSegmentInfo(v)
			if err != nil {
				return err
			}
			n, _, err := removeSegmentEntries(b, g.seq, info, -1)
			if err != nil {
				return err
			}
			removed += n
			if err := sb.Delete(u64(g.seq)); err != nil {
				return err
			}
			gone = append(gone, g)
		}
		if len(gone) == 0 {
			return nil
		}
		// The mark only rises: a segment deleted after later ones were leaves it where it is.
		return b.Put(keyPurged, u64(max(getU64(b.Get(keyPurged)), gone[len(gone)-1].seq)))
	})
	if err != nil {
		return 0, 0, true, err
	}
	st.frags.Add(-int64(removed))
	var freed int64
	for _, g := range gone {
		if seg := st.segs[g.seq]; seg != nil {
			// All its records are indexed (pending is 0), so no sync of it is outstanding.
			_ = seg.closeFile()
			delete(st.segs, g.seq)
		}
		path := filepath.Join(st.dir, segmentName(g.seq))
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, freed, true, err
		}
		removedPaths[path] = true
		st.bytes.Add(-g.size)
		freed += g.size
	}
	return removed, freed, stop, nil
}

// doomed is a segment a purge deletes: its sequence number, index summary and size.
type doomed struct {
	seq  uint64
	info segmentInfo
	size int64
}

// segmentSize is the size of segment seq of st: its bytes written when this process has it
// open, else its file's size (0 when it is gone). st.mu is held.
func (s *FS) segmentSize(st *fsStream, seq uint64) int64 {
	if g := st.segs[seq]; g != nil {
		return g.size
	}
	fi, err := os.Stat(filepath.Join(st.dir, segmentName(seq)))
	if err != nil {
		return 0
	}
	return fi.Size()
}
