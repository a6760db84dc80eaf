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

// EnforceRetention implements Store. For each stream it deletes the oldest segments, in order,
// while their newest fragment's server time is before now - RetentionHours, together with their
// index entries; a fragment therefore outlives its retention by up to one segment's span
// (MaxSegmentAge, default 1 h). A segment with appends still being committed is kept for the
// next run. The index commit comes first: files left by a crash right after it are removed by
// OpenFS rather than brought back.
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
		n, err := s.purge(j.st, j.cutoff)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("retention %s: %w", j.st.info.Name, err))
		}
	}
	return total, errors.Join(errs...)
}

// purge deletes the stream's leading segments whose newest fragment is before cutoff.
func (s *FS) purge(st *fsStream, cutoff time.Time) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.deleted {
		return 0, nil
	}
	cut := timeToNanos(cutoff)
	type expired struct {
		seq  uint64
		info segmentInfo
	}
	var segs []expired
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
			if info.MaxServer >= cut {
				break
			}
			if g := st.segs[seq]; g != nil && g.pending.Load() > 0 {
				break
			}
			segs = append(segs, expired{seq, info})
		}
		return nil
	})
	if err != nil || len(segs) == 0 {
		return 0, err
	}
	removed := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			return nil
		}
		for _, g := range segs {
			n, _, err := removeSegmentEntries(b, g.seq, g.info, -1)
			if err != nil {
				return err
			}
			removed += n
			if err := b.Bucket(bucketSegs).Delete(u64(g.seq)); err != nil {
				return err
			}
		}
		return b.Put(keyPurged, u64(segs[len(segs)-1].seq))
	})
	if err != nil {
		return 0, err
	}
	for _, g := range segs {
		if seg := st.segs[g.seq]; seg != nil {
			// All its records are indexed (pending is 0), so no sync of it is outstanding.
			if st.active == seg {
				st.active = nil
			}
			_ = seg.closeFile()
			delete(st.segs, g.seq)
		}
		if err := os.Remove(filepath.Join(st.dir, segmentName(g.seq))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
	}
	return removed, nil
}
