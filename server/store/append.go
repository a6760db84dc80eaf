package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Append writes its record to the stream's segment file itself (so copying the
// bytes to the page cache runs in parallel across callers), then queues a request and waits.
// Two goroutines turn the queue into durable, indexed fragments:
//
//   - syncLoop takes everything queued (up to maxBatch), fdatasyncs each segment touched by the
//     batch once (in parallel), then hands the batch on;
//   - indexLoop commits the index entries of the whole batch in one bbolt transaction (whose
//     commit fsyncs) and only then releases the waiters.
//
// While indexLoop commits batch N, syncLoop already syncs batch N+1, and every append that
// arrives during either wait joins the next batch: at 200 streams × 1 fragment/s the disk sees a
// few fsyncs per batch instead of three per fragment. No Append returns success before its
// record is fdatasynced and its index entry committed.

// appendRequest is one record on its way to the index, or (closeOnly) a sealed segment whose
// file the committer closes once the records queued before it are synced.
type appendRequest struct {
	st        *fsStream
	seg       *segment
	entry     indexEntry
	closeOnly bool
	err       error
	done      chan error // buffered: the committer never blocks on a caller that gave up
}

// closeFile closes the segment's file once; later calls do nothing.
func (g *segment) closeFile() error {
	var err error
	g.closeOnce.Do(func() { err = g.f.Close() })
	return err
}

// Append implements Store. meta.Size is ignored: the stored size is len(data). If ctx ends while
// waiting, Append returns ctx.Err() and the fragment may or may not be stored.
func (s *FS) Append(ctx context.Context, stream string, meta FragmentMeta, data []byte) error {
	if len(data) > MaxRecordSize {
		return fmt.Errorf("append %s: %w (%d bytes)", stream, ErrRecordTooLarge, len(data))
	}
	st, info, err := s.lookup(stream)
	if err != nil {
		return err
	}
	if info.RetentionHours <= 0 {
		return fmt.Errorf("append %s: %w", stream, ErrNoRetention)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	req, err := s.write(st, stream, meta, data)
	if err != nil {
		return err
	}
	select {
	case err := <-req.done:
		if err != nil {
			return fmt.Errorf("append %s fragment %d: %w", stream, meta.Number, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write appends the record to the stream's active segment and queues it for the committer.
func (s *FS) write(st *fsStream, stream string, meta FragmentMeta, data []byte) (*appendRequest, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.deleted {
		return nil, fmt.Errorf("%w: %s", ErrStreamNotFound, stream)
	}
	if meta.Number == 0 || meta.Number <= st.last || meta.Number >= st.next {
		return nil, fmt.Errorf("append %s fragment %d: %w", stream, meta.Number, ErrNumberOrder)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	recLen := int64(recordHeaderSize + len(data))
	seg, err := s.segmentFor(st, recLen)
	if err != nil {
		return nil, fmt.Errorf("append %s: %w", stream, err)
	}
	h := newRecordHeader(meta, data)
	off := seg.size
	_, err = seg.f.WriteAt(h.encode(make([]byte, 0, recordHeaderSize)), off)
	if err == nil {
		_, err = seg.f.WriteAt(data, off+recordHeaderSize)
	}
	if err != nil {
		// Leave no partial record behind if we can; either way, never write here again.
		_ = seg.f.Truncate(off)
		s.seal(st)
		return nil, fmt.Errorf("append %s: %w", stream, err)
	}
	seg.size += recLen
	st.last = meta.Number
	seg.pending.Add(1)
	req := &appendRequest{
		st:  st,
		seg: seg,
		entry: indexEntry{
			Number: meta.Number, Segment: seg.seq, Offset: off, Size: int64(len(data)),
			ServerNanos: h.ServerNanos, ProducerNanos: h.ProducerNano, Duration: h.Duration,
		},
		done: make(chan error, 1),
	}
	s.queue <- req
	return req, nil
}

// segmentFor returns the segment the next record of recLen bytes goes to, rolling over when the
// active one is full, too old or failed. st.mu and s.closeMu (read) are held.
func (s *FS) segmentFor(st *fsStream, recLen int64) (*segment, error) {
	now := s.opts.now()
	if g := st.active; g != nil {
		full := g.size > 0 && g.size+recLen > s.opts.MaxSegmentBytes
		if !full && !g.failed.Load() && now.Sub(g.created) < s.opts.MaxSegmentAge {
			return g, nil
		}
		s.seal(st)
	}
	if _, err := os.Stat(st.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(st.dir, 0o750); err != nil {
			return nil, err
		}
		if err := syncDir(filepath.Dir(st.dir)); err != nil {
			return nil, err
		}
	}
	seq := st.nextSeq
	path := filepath.Join(st.dir, segmentName(seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	// The directory entry must be durable before any record in the file is acknowledged.
	if err := syncDir(st.dir); err != nil {
		f.Close()
		return nil, err
	}
	st.nextSeq++
	g := &segment{seq: seq, path: path, f: f, created: now}
	st.active = g
	st.segs[seq] = g
	return g, nil
}

// seal stops appends to the active segment; the committer closes its file after syncing the
// records queued before. st.mu is held. After Close (queue closed) the file is left to Close.
func (s *FS) seal(st *fsStream) {
	g := st.active
	if g == nil {
		return
	}
	st.active = nil
	if s.closed.Load() {
		return
	}
	s.queue <- &appendRequest{st: st, seg: g, closeOnly: true}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncLoop is the first committer stage: batch, fdatasync, hand on.
func (s *FS) syncLoop() {
	defer s.wg.Done()
	defer close(s.synced)
	for req := range s.queue {
		batch := []*appendRequest{req}
	drain:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.statBatches.Add(1)
		s.statSyncs.Add(int64(syncBatch(batch)))
		s.synced <- batch
	}
}

// syncBatch fdatasyncs every segment written by the batch once, recording failures on the
// requests, then closes the segments sealed in the batch. It returns the number of fdatasyncs.
func syncBatch(batch []*appendRequest) int {
	var segs []*segment
	seen := map[*segment]bool{}
	for _, r := range batch {
		if !r.closeOnly && !seen[r.seg] {
			seen[r.seg] = true
			segs = append(segs, r.seg)
		}
	}
	errs := make(map[*segment]error, len(segs))
	if len(segs) == 1 {
		errs[segs[0]] = fdatasync(segs[0].f)
	} else {
		// Concurrent fdatasyncs let the filesystem fold them into one journal commit.
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, g := range segs {
			sem <- struct{}{}
			wg.Go(func() {
				err := fdatasync(g.f)
				mu.Lock()
				errs[g] = err
				mu.Unlock()
				<-sem
			})
		}
		wg.Wait()
	}
	for _, r := range batch {
		if r.closeOnly {
			continue
		}
		if err := errs[r.seg]; err != nil {
			// After a failed fsync the page cache state is unknown: roll to a new segment.
			r.seg.failed.Store(true)
			r.err = err
		}
	}
	for _, r := range batch {
		if r.closeOnly {
			_ = r.seg.closeFile()
		}
	}
	return len(segs)
}

// indexLoop is the second committer stage: one bbolt transaction per batch, then release.
func (s *FS) indexLoop() {
	defer s.wg.Done()
	for batch := range s.synced {
		s.indexBatch(batch)
	}
}

func (s *FS) indexBatch(batch []*appendRequest) {
	var todo []*appendRequest
	for _, r := range batch {
		if !r.closeOnly && r.err == nil {
			todo = append(todo, r)
		}
	}
	if len(todo) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range todo {
				b := tx.Bucket(dataBucketName(r.st.id))
				if b == nil { // deleted meanwhile
					r.err = ErrStreamNotFound
					continue
				}
				if err := putEntry(b, r.entry); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			for _, r := range todo {
				if r.err == nil {
					r.err = fmt.Errorf("index commit: %w", err)
				}
			}
		}
	}
	s.statAppends.Add(int64(len(todo)))
	for _, r := range batch {
		if !r.closeOnly {
			r.seg.pending.Add(-1)
			r.done <- r.err
		}
	}
}

// createDataBucket makes a stream's data bucket with its sub-buckets.
func createDataBucket(tx *bolt.Tx, id uint64) (*bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(dataBucketName(id))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketNumber, bucketServer, bucketProd, bucketSegs} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// putEntry indexes e under the three keys and extends its segment's summary.
func putEntry(b *bolt.Bucket, e indexEntry) error {
	v := e.encode()
	nb, sb, pb, gb := b.Bucket(bucketNumber), b.Bucket(bucketServer), b.Bucket(bucketProd), b.Bucket(bucketSegs)
	// Keys arrive nearly in order: pack pages fuller than bbolt's default half.
	nb.FillPercent, sb.FillPercent, pb.FillPercent = 0.9, 0.9, 0.9
	if err := nb.Put(u64(e.Number), v); err != nil {
		return err
	}
	if err := sb.Put(timeIndexKey(e.ServerNanos, e.Number), v); err != nil {
		return err
	}
	if err := pb.Put(timeIndexKey(e.ProducerNanos, e.Number), v); err != nil {
		return err
	}
	var info segmentInfo
	if old := gb.Get(u64(e.Segment)); old != nil {
		var err error
		if info, err = decodeSegmentInfo(old); err != nil {
			return err
		}
	}
	info.add(e)
	return gb.Put(u64(e.Segment), info.encode())
}

// removeSegmentEntries deletes the index entries of segment seq whose record ends past keepEnd
// (keepEnd < 0: all of them) and returns how many went and the summary of the rest.
func removeSegmentEntries(b *bolt.Bucket, seq uint64, info segmentInfo, keepEnd int64) (int, segmentInfo, error) {
	nb := b.Bucket(bucketNumber)
	var drop []indexEntry
	var rest segmentInfo
	c := nb.Cursor()
	for k, v := c.Seek(u64(info.First)); k != nil && getU64(k) <= info.Last; k, v = c.Next() {
		e, err := decodeIndexEntry(getU64(k), v)
		if err != nil {
			return 0, rest, err
		}
		if e.Segment != seq {
			continue
		}
		if keepEnd >= 0 && e.end() <= keepEnd {
			rest.add(e)
			continue
		}
		drop = append(drop, e)
	}
	for _, e := range drop {
		if err := nb.Delete(u64(e.Number)); err != nil {
			return 0, rest, err
		}
		if err := b.Bucket(bucketServer).Delete(timeIndexKey(e.ServerNanos, e.Number)); err != nil {
			return 0, rest, err
		}
		if err := b.Bucket(bucketProd).Delete(timeIndexKey(e.ProducerNanos, e.Number)); err != nil {
			return 0, rest, err
		}
	}
	return len(drop), rest, nil
}
