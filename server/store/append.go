package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openkvs/kvs/internal/fsync"
	"github.com/openkvs/kvs/internal/piecewrite"
)

// Group commit. AppendAsync writes its record to the stream's segment file itself (so copying the
// bytes to the page cache runs in parallel across callers), then queues a request and waits.
// Two goroutines turn the queue into durable, indexed fragments:
//
//   - syncLoop takes everything queued (up to maxBatch) as one batch and starts fdatasyncing
//     each segment the batch touched, once, in parallel; up to maxSyncing batches sync at once;
//   - indexLoop takes the appends whose batch's fdatasyncs are done, each behind the earlier
//     appends of its own stream (not behind other streams'), commits their index entries in one
//     bbolt transaction (whose commit fsyncs) and only then releases the waiters.
//
// Every append that arrives while earlier ones sync or commit joins a later batch, so at 200
// streams × 1 fragment/s the index sees a few commits per second rather than 200. Nobody returns
// success before their record is fdatasynced and their index entry committed, and a stream's
// index entries are committed in its queue order, so per stream they never run ahead of the data
// and readers see its fragments in number order.

// syncingBatch is a batch on its way from syncLoop to indexLoop; done closes when its
// fdatasyncs have finished.
type syncingBatch struct {
	reqs []*appendRequest
	done chan struct{}
}

// appendRequest is one record on its way to the index, or (closeOnly) a sealed segment whose
// file the committer closes once the records queued before it are synced and indexed.
type appendRequest struct {
	st        *fsStream
	seg       *segment
	entry     indexEntry
	closeOnly bool
	err       error
	done      chan error // buffered: the committer never blocks on a caller that gave up
	// syncedUpTo is how many fdatasyncs of seg had started when this record's own ended: it is
	// acknowledged once they have all ended, and none failed (segment.settled).
	syncedUpTo uint64
}

// Why a record waits for the other fdatasyncs of its segment. Linux reports a failed writeback
// to one fsync of the file, the first to look after it, and the pages it lost are clean
// afterwards. So an fdatasync that returns nil proves nothing about records whose pages were in
// a failed writeback that another fdatasync of the same file reported: one that ran beside it
// (maxSyncing batches sync at once, and consecutive appends of a stream often sit in consecutive
// batches), or one that ended before it. A record is acknowledged only when every fdatasync of
// its segment that started before its own ended has ended, and none of the segment's failed.

// syncStart registers an fdatasync of g about to run and returns its id.
func (g *segment) syncStart() uint64 {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	g.syncStarted++
	g.syncing = append(g.syncing, g.syncStarted)
	return g.syncStarted
}

// syncEnd records the end of fdatasync id (failed when err is set) and returns how many had
// started by then.
func (g *segment) syncEnd(id uint64, err error) uint64 {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	if err != nil {
		g.failed.Store(true) // the page cache state is unknown: the next append rolls to a new segment
	}
	g.syncing = slices.DeleteFunc(g.syncing, func(v uint64) bool { return v == id })
	return g.syncStarted
}

// settled reports whether the fdatasyncs 1..upTo of g have all ended.
func (g *segment) settled(upTo uint64) bool {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	for _, id := range g.syncing {
		if id <= upTo {
			return false
		}
	}
	return true
}

// closeFile closes the segment's file once; later calls do nothing.
func (g *segment) closeFile() error {
	var err error
	g.closeOnce.Do(func() { err = g.f.Close() })
	return err
}

// AppendAsync implements Store: it writes the record to the segment and queues it for the group
// commit, then returns; wait returns nil once the record is fdatasynced and indexed. The next
// fragment of the stream may be appended before wait returns, so one stream's consecutive
// fragments can share an fdatasync.
func (s *FS) AppendAsync(ctx context.Context, stream string, meta FragmentMeta, data []byte) (wait func(context.Context) error, err error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("append %s: %w (%d bytes)", stream, ErrRecordTooLarge, len(data))
	}
	st, info, err := s.lookup(stream)
	if err != nil {
		return nil, err
	}
	if info.RetentionHours <= 0 {
		return nil, fmt.Errorf("append %s: %w", stream, ErrNoRetention)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.makeRoom(st, int64(recordHeaderSize+len(data))) // quota.go
	req, err := s.write(st, stream, meta, data)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		select {
		case err := <-req.done:
			if err != nil {
				return fmt.Errorf("append %s fragment %d: %w", stream, meta.Number, err)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
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
	for l := s.largestRecord.Load(); recLen > l && !s.largestRecord.CompareAndSwap(l, recLen); l = s.largestRecord.Load() {
	} // counted before the write: a fragment that does not fit is what Ready must want room for
	seg, err := s.segmentFor(st, recLen)
	if err != nil {
		return nil, fmt.Errorf("append %s: %w", stream, err)
	}
	h := newRecordHeader(meta, data)
	off := seg.size
	_, err = seg.f.WriteAt(h.encode(make([]byte, 0, recordHeaderSize)), off)
	if err == nil {
		err = piecewrite.WriteAt(seg.f, data, off+recordHeaderSize) // a record is a whole fragment: megabytes
	}
	if err != nil {
		if off == 0 && seg.f.Truncate(0) == nil {
			// The segment never held a record (none queued, no fdatasync of it): remove it
			// rather than seal it, or every append failing on a full disk left an empty file,
			// which only OpenFS removes. Its sequence number stays taken.
			st.active = nil
			delete(st.segs, seg.seq)
			_ = seg.closeFile()
			_ = os.Remove(seg.path)
			return nil, fmt.Errorf("append %s: %w", stream, err)
		}
		// Leave no partial record behind if we can; either way, never write here again.
		_ = seg.f.Truncate(off)
		s.seal(st)
		return nil, fmt.Errorf("append %s: %w", stream, err)
	}
	seg.size += recLen
	st.bytes.Add(recLen)
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
		full := g.size > 0 && g.size+recLen > s.segmentLimit(st)
		if !full && !g.failed.Load() && now.Sub(g.created) < s.opts.MaxSegmentAge {
			return g, nil
		}
		if g.size == 0 && !g.failed.Load() {
			// Empty (opened by Prepare for an upload that sent nothing for a while): its age
			// starts with its first record. Sealing it would leave an empty file that no
			// retention pass removes (only OpenFS does).
			g.created = now
			return g, nil
		}
		s.seal(st)
	}
	if _, err := os.Stat(st.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(st.dir, 0o750); err != nil {
			return nil, err
		}
		if err := fsync.Dir(filepath.Dir(st.dir)); err != nil {
			return nil, err
		}
	}
	seq := st.nextSeq
	path := filepath.Join(st.dir, segmentName(seq))
	f, err := openSegment(path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return nil, err
	}
	// The name is taken from here on, whatever follows: a failure below that left nextSeq as it
	// was made every later append of the stream fail on the file left behind (O_EXCL).
	st.nextSeq++
	// The directory entry must be durable before any record in the file is acknowledged.
	if err := fsync.Dir(st.dir); err != nil {
		f.Close()
		_ = os.Remove(path) // empty; OpenFS removes it if this fails too
		return nil, err
	}
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

// syncLoop is the first committer stage: batch, start the fdatasyncs, hand on in order.
func (s *FS) syncLoop() {
	defer s.wg.Done()
	defer close(s.synced)
	sem := make(chan struct{}, maxSyncing)
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
		sb := &syncingBatch{reqs: batch, done: make(chan struct{})}
		sem <- struct{}{}
		s.wg.Go(func() {
			synced := syncBatch(batch, s.metrics, s.syncData)
			s.statSyncs.Add(int64(len(synced)))
			close(sb.done)
			select { // indexLoop looks at every batch after a token: one waiting is enough
			case s.syncedAny <- struct{}{}:
			default:
			}
			<-sem
			// Counted once the batch's appends may go on to their index commit and ack: dropping
			// pages from the page cache is no part of what a PERSISTED ack waits for.
			for _, w := range synced {
				if w.err == nil {
					s.written.synced(w.seg, w.end)
				}
			}
		})
		s.synced <- sb
	}
}

// errSegmentSyncFailed fails an append whose segment had an fdatasync fail that may have been
// its record's (see syncStart).
var errSegmentSyncFailed = errors.New("an fdatasync of its segment failed: the record may not be on disk")

// syncBatch fdatasyncs (syncData) every segment written by the batch once, in parallel,
// recording failures on the requests and the latency of each in m. It returns one segmentSync
// per fdatasync.
func syncBatch(batch []*appendRequest, m *fsMetrics, syncData func(*os.File) error) []segmentSync {
	var segs []segmentSync
	index := map[*segment]int{}
	for _, r := range batch {
		if r.closeOnly {
			continue
		}
		i, ok := index[r.seg]
		if !ok {
			i = len(segs)
			index[r.seg] = i
			segs = append(segs, segmentSync{seg: r.seg})
		}
		segs[i].end = max(segs[i].end, r.entry.end())
	}
	sync1 := func(i int) {
		w := &segs[i]
		id := w.seg.syncStart()
		start := time.Now()
		w.err = syncData(w.seg.f)
		m.fdatasync.Observe(time.Since(start).Seconds())
		w.upTo = w.seg.syncEnd(id, w.err)
	}
	if len(segs) == 1 {
		sync1(0)
	} else {
		// Concurrent fdatasyncs let the filesystem fold them into fewer journal commits.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := range segs {
			sem <- struct{}{}
			wg.Go(func() {
				sync1(i)
				<-sem
			})
		}
		wg.Wait()
	}
	for _, r := range batch {
		if r.closeOnly {
			continue
		}
		w := segs[index[r.seg]]
		r.syncedUpTo = w.upTo
		if w.err != nil {
			r.err = w.err
		}
	}
	return segs
}

// segmentSync is one fdatasync of a batch: its segment, the end of the batch's last record in
// it, and its outcome (syncEnd's value, the fdatasync's error).
type segmentSync struct {
	seg  *segment
	end  int64
	upTo uint64
	err  error
}

// indexLoop is the second committer stage: one bbolt transaction per group of synced appends,
// then release. It takes every batch syncLoop hands on at once, and commits an append as soon as
// its batch's fdatasyncs are done and every earlier append of its stream is committed (or in
// the same transaction): per stream in queue order, but not behind other streams. A batch
// touches the segments of many streams; one slow fdatasync among them (a disk's tail) used to
// hold every later append of every stream until it ended.
func (s *FS) indexLoop() {
	defer s.wg.Done()
	var waiting []*syncingBatch // received, with appends not yet committed, in queue order
	var pace commitPacer
	open, full := true, false
	for open || len(waiting) > 0 {
		switch {
		case full: // the last commit took maxBatch: there may be more ready already
		case open:
			select {
			case sb, ok := <-s.synced:
				if !ok {
					open = false
					continue
				}
				waiting = append(waiting, sb)
			case <-s.syncedAny:
			}
		default:
			<-s.syncedAny
		}
		waiting, open = receiveSynced(s.synced, waiting, open)
		var ready []*appendRequest
		if waiting, ready = takeReady(waiting, nil); len(ready) == 0 {
			full = false
			continue
		}
		pace.wait(ready)
		waiting, open = receiveSynced(s.synced, waiting, open)
		waiting, ready = takeReady(waiting, ready) // what synced during the pause joins
		full = len(ready) >= maxBatch
		s.statBatches.Add(1)
		s.indexBatch(ready)
	}
}

// receiveSynced appends to waiting every batch syncLoop has handed on and indexLoop not yet
// received (syncLoop blocks once maxSyncing wait there), and reports whether synced is still open.
func receiveSynced(synced <-chan *syncingBatch, waiting []*syncingBatch, open bool) ([]*syncingBatch, bool) {
	for open {
		select {
		case sb, ok := <-synced:
			if !ok {
				return waiting, false
			}
			waiting = append(waiting, sb)
		default:
			return waiting, true
		}
	}
	return waiting, open
}

// takeReady moves to ready (up to maxBatch) the appends of waiting that may be committed now:
// those of batches whose fdatasyncs are done, each behind every earlier append of its stream
// still waiting, and whose segment's fdatasyncs that began before theirs ended have ended (a
// later batch's: its end wakes indexLoop). It returns the batches left, in order.
func takeReady(waiting []*syncingBatch, ready []*appendRequest) ([]*syncingBatch, []*appendRequest) {
	blocked := map[*fsStream]bool{} // streams with an earlier append still waiting
	left := waiting[:0]
	for _, sb := range waiting {
		select {
		case <-sb.done: // its syncing goroutine is done with sb.reqs
		default:
			for _, r := range sb.reqs {
				blocked[r.st] = true
			}
			left = append(left, sb)
			continue
		}
		rest := sb.reqs[:0]
		for _, r := range sb.reqs {
			if !blocked[r.st] && len(ready) < maxBatch && (r.closeOnly || r.seg.settled(r.syncedUpTo)) {
				ready = append(ready, r)
				continue
			}
			blocked[r.st] = true
			rest = append(rest, r)
		}
		if sb.reqs = rest; len(rest) > 0 {
			left = append(left, sb)
		}
	}
	clear(waiting[len(left):]) // the batches dropped: nothing refers to them
	return left, ready
}

// commitPacer spaces index commits by commitInterval while busyStreams or more streams append
// (see commitInterval). It belongs to indexLoop.
type commitPacer struct {
	last        time.Time // the start of the last commit
	windowStart time.Time
	window      map[*fsStream]struct{} // streams seen since windowStart
	busy        bool                   // the last full window saw busyStreams or more
}

// wait counts reqs' streams and, when busy, sleeps until commitInterval has passed since the
// last commit, so that the appends synced meanwhile join this one.
func (p *commitPacer) wait(reqs []*appendRequest) {
	now := time.Now()
	if p.window == nil {
		p.window = map[*fsStream]struct{}{}
	}
	if now.Sub(p.windowStart) > busyWindow {
		p.busy = len(p.window) >= busyStreams
		clear(p.window)
		p.windowStart = now
	}
	for _, r := range reqs {
		p.window[r.st] = struct{}{}
	}
	if d := p.last.Add(commitInterval).Sub(now); p.busy && d > 0 {
		time.Sleep(d)
		now = now.Add(d)
	}
	p.last = now
}

func (s *FS) indexBatch(batch []*appendRequest) {
	var todo []*appendRequest
	for _, r := range batch {
		if !r.closeOnly && r.err == nil && r.seg.failed.Load() {
			r.err = errSegmentSyncFailed // settled: the fdatasyncs that could have reported its loss ended
		}
		if !r.closeOnly && r.err == nil {
			todo = append(todo, r)
		}
	}
	if len(todo) > 0 {
		start := time.Now()
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
		s.metrics.commit.Observe(time.Since(start).Seconds())
		if err != nil {
			for _, r := range todo {
				if r.err == nil {
					r.err = fmt.Errorf("index commit: %w", err)
				}
			}
		}
		for _, r := range todo {
			if r.err == nil {
				r.st.frags.Add(1)
			}
		}
	}
	s.statAppends.Add(int64(len(todo)))
	for _, r := range batch {
		if r.closeOnly {
			// Every record queued before the seal is synced and committed: they are the
			// stream's earlier appends, which indexLoop commits first.
			_ = r.seg.closeFile()
			continue
		}
		r.seg.pending.Add(-1)
		r.done <- r.err
	}
}
