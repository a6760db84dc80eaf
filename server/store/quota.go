package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Byte caps of the FS store: the disk quota (FSOptions.MaxDiskBytes, MaxDiskPercent) and each
// stream's kvs:max-bytes tag (MaxBytesTag). Both are applied by the append that would pass them,
// before it writes: it deletes the oldest whole segments (of every stream for the quota, of its
// own for a stream's cap) through the same purge as retention (index first, files after), then
// writes. Ingest is never refused for old data; an append waits for a deletion only when it is
// the one that passes a cap, once per segment deleted. Segments are sized to the caps (a
// sixteenth of the quota, an eighth of a stream's cap), so a deletion takes a small step and the
// usage stays within the cap plus what cannot be deleted yet (records still being committed)
// and the index's growth. EnforceRetention applies them again, for caps lowered since.

// diskQuota is the disk cap of an FS; with both limits zero, none.
type diskQuota struct {
	dir     string
	bytes   int64   // MaxDiskBytes, 0: none
	percent float64 // MaxDiskPercent, 0: none
	size    int64   // the filesystem's size (used + available) when opened, with percent
	warned  atomic.Int64
}

func newDiskQuota(dir string, bytes int64, percent float64) (*diskQuota, error) {
	q := &diskQuota{dir: dir, bytes: bytes, percent: percent}
	switch {
	case bytes < 0:
		return q, fmt.Errorf("disk limit %d bytes: want a positive size", bytes)
	case percent < 0 || percent > 100:
		return q, fmt.Errorf("disk limit %g%%: want more than 0 and at most 100", percent)
	case percent > 0:
		used, avail, err := filesystemUsage(dir)
		if err != nil {
			return q, fmt.Errorf("disk limit %g%% of %s: %w", percent, dir, err)
		}
		q.size = used + avail
	}
	return q, nil
}

func (q *diskQuota) on() bool { return q.bytes > 0 || q.percent > 0 }

// limit is the quota in bytes of the store's own use (for percent, as of the filesystem's size
// at open); 0: none.
func (q *diskQuota) limit() int64 {
	l := q.bytes
	if q.percent > 0 {
		p := int64(float64(q.size) * q.percent / 100)
		if l == 0 || p < l {
			l = p
		}
	}
	return l
}

// segmentBytes is the segment size the quota asks for (0: no quota).
func (q *diskQuota) segmentBytes() int64 {
	if l := q.limit(); l > 0 {
		return max(l/16, 64<<10)
	}
	return 0
}

// excess returns by how many bytes the store would pass its quota with recLen more bytes written.
func (q *diskQuota) excess(s *FS, recLen int64) int64 {
	var over int64
	if q.bytes > 0 {
		var used int64
		s.mu.RLock()
		for _, st := range s.streams {
			used += st.bytes.Load()
		}
		s.mu.RUnlock()
		over = used + s.indexBytes() + recLen - q.bytes
	}
	if q.percent > 0 {
		if used, avail, err := filesystemUsage(q.dir); err == nil {
			over = max(over, used+recLen-int64(float64(used+avail)*q.percent/100))
		}
	}
	return over
}

// segmentLimit is the size at which st rolls to a new segment: MaxSegmentBytes (already sized to
// the disk quota), or an eighth of the stream's cap when that is smaller.
func (s *FS) segmentLimit(st *fsStream) int64 {
	l := s.opts.MaxSegmentBytes
	if c := st.maxBytes.Load(); c > 0 {
		l = min(l, max(c/8, 1))
	}
	return l
}

// makeRoom applies the caps before an append of recLen bytes to st (see the top of this file).
func (s *FS) makeRoom(st *fsStream, recLen int64) {
	if limit := st.maxBytes.Load(); limit > 0 && st.bytes.Load()+recLen > limit {
		s.trimStream(st, limit-recLen)
	}
	s.makeRoomOnDisk(recLen)
}

// trimStream deletes st's oldest segments until its files take at most target bytes, or none is
// left that may go. The segment that holds the stream's newest fragment stays (the contract:
// a cap always keeps it), also when it alone is over the cap: a cap set on a stream that
// recorded without one, in segments bigger than the cap, emptied the stream.
func (s *FS) trimStream(st *fsStream, target int64) {
	left := st.bytes.Load()
	_, _, err := s.purge(context.Background(), st, func(_ uint64, info segmentInfo, size int64) bool {
		if left <= target || info.Last >= st.last { // purgeChoose holds st.mu
			return false
		}
		left -= size
		return true
	}, reasonStreamCap, false)
	if err != nil {
		s.log.Error("store: stream byte cap", "stream", st.info.Name, "err", err)
	}
}

// makeRoomOnDisk deletes the oldest segments across all streams until recLen more bytes fit in
// the disk quota, or nothing is left that may go (then the append goes on over the quota, and
// that is logged at most once a minute).
func (s *FS) makeRoomOnDisk(recLen int64) {
	if !s.quota.on() {
		return
	}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	need := s.quota.excess(s, recLen)
	skip := map[*fsStream]bool{}
	for need > 0 {
		st, seq, err := s.oldestSegment(skip)
		if err != nil {
			s.log.Error("store: disk quota", "err", err)
			return
		}
		if st == nil {
			if now := time.Now().Unix(); now-s.quota.warned.Load() >= 60 {
				s.quota.warned.Store(now)
				s.log.Warn("store: over the disk quota with nothing left to delete (every stream's oldest segment is still being written)",
					"over_bytes", need)
			}
			return
		}
		_, freed, err := s.purge(context.Background(), st, func(q uint64, _ segmentInfo, _ int64) bool { return q == seq }, reasonDiskQuota, false)
		if err != nil {
			s.log.Error("store: disk quota", "stream", st.info.Name, "err", err)
			return
		}
		if freed == 0 {
			skip[st] = true // its segment is being committed, or went meanwhile: look elsewhere
		}
		need -= freed
	}
}

// oldestSegment returns the stream whose first segment holds the oldest newest fragment (the
// segment retention would delete first) and that segment's sequence number, leaving out the
// streams in skip; nil when no stream has one.
func (s *FS) oldestSegment(skip map[*fsStream]bool) (*fsStream, uint64, error) {
	s.mu.RLock()
	streams := make([]*fsStream, 0, len(s.streams))
	for _, st := range s.streams {
		if !skip[st] {
			streams = append(streams, st)
		}
	}
	s.mu.RUnlock()
	var (
		best    *fsStream
		bestSeq uint64
		bestMax int64
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, st := range streams {
			b := tx.Bucket(dataBucketName(st.id))
			if b == nil {
				continue
			}
			k, v := b.Bucket(bucketSegs).Cursor().First()
			if k == nil {
				continue
			}
			info, err := decodeSegmentInfo(v)
			if err != nil {
				return err
			}
			if best == nil || info.MaxServer < bestMax {
				best, bestSeq, bestMax = st, getU64(k), info.MaxServer
			}
		}
		return nil
	})
	return best, bestSeq, err
}
