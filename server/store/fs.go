package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/openkvs/kvs/internal/fsync"
)

// FS is the embedded Store: per-stream append-only segment files plus one bbolt file holding
// the stream registry and the fragment index. See doc.go for the design. FS is safe for
// concurrent use; only one FS may open a directory at a time (bbolt's file lock enforces it).
type FS struct {
	dir  string
	opts FSOptions
	log  *slog.Logger
	db   *bolt.DB

	mu      sync.RWMutex // guards streams and each fsStream.info
	streams map[string]*fsStream

	closed  atomic.Bool
	closeMu sync.RWMutex // held for reading while enqueueing to the committer; Close takes it
	queue   chan *appendRequest
	synced  chan *syncingBatch
	// syncedAny has a token when a batch's fdatasyncs ended since indexLoop last looked.
	syncedAny chan struct{}
	// syncData fdatasyncs a segment: fsync.Data (tests slow it down).
	syncData func(*os.File) error
	// removeAll removes a deleted stream's directory: os.RemoveAll, or FSOptions.removeAll.
	removeAll func(string) error
	wg        sync.WaitGroup

	recovered []RecoveryReport

	written writtenCache // WrittenCacheBytes (pagecache.go)

	quota   *diskQuota // MaxDiskBytes, MaxDiskPercent (quota.go)
	quotaMu sync.Mutex // one deletion pass for the disk quota at a time
	metrics *fsMetrics

	// largestRecord is the largest record (header and fragment) written since the start, the
	// room Ready wants for the next (readyRoom).
	largestRecord atomic.Int64

	// Group-commit counters, for benchmarks and tests.
	statBatches, statAppends, statSyncs atomic.Int64
}

// fsStream is the in-memory state of one stream.
type fsStream struct {
	id   uint64
	dir  string
	info Stream // guarded by FS.mu

	mu      sync.Mutex // serializes appends, number reservation, retention and deletion
	deleted bool
	next    uint64 // next number NextNumber hands out
	hwm     uint64 // persisted: numbers >= hwm were never handed out
	last    uint64 // last number written to a segment
	active  *segment
	nextSeq uint64
	segs    map[uint64]*segment // segments written by this process, until purged

	bytes    atomic.Int64 // what its segment files take (records in flight included)
	frags    atomic.Int64 // indexed fragments
	maxBytes atomic.Int64 // its kvs:max-bytes cap (MaxBytesTag), 0: none
}

// setInfo records a new version of the stream's metadata (FS.mu held for writing) and the cap
// its tags set.
func (st *fsStream) setInfo(info Stream) {
	st.info = info
	limit, _ := MaxBytes(info) // the server refuses bad values; an old one is no cap
	st.maxBytes.Store(limit)
}

// segment is one open segment file being appended to.
type segment struct {
	seq     uint64
	path    string
	f       *os.File
	size    int64 // bytes written (guarded by fsStream.mu)
	created time.Time
	pending atomic.Int64 // records written but not yet indexed
	failed  atomic.Bool  // an fdatasync failed: never write to it again, acknowledge no record of it

	syncMu      sync.Mutex
	syncStarted uint64   // fdatasyncs of the file started so far (their ids are 1, 2, ...)
	syncing     []uint64 // the ids of those still running

	cachedEnd int64 // the end of the bytes counted in writtenCache (guarded by its mu)

	closeOnce sync.Once
}

// streamRecord is the registry value.
type streamRecord struct {
	Stream
	ID uint64
}

var _ Store = (*FS)(nil)

// OpenFS opens (creating if needed) the store in dir, recovers every stream's segments (see
// Recovered) and starts the group-commit goroutines.
func OpenFS(dir string, opts FSOptions) (*FS, error) {
	if opts.MaxSegmentBytes <= 0 {
		opts.MaxSegmentBytes = defaultMaxSegmentBytes
	}
	if opts.MaxSegmentAge <= 0 {
		opts.MaxSegmentAge = defaultMaxSegmentAge
	}
	if opts.WrittenCacheBytes == 0 {
		opts.WrittenCacheBytes = defaultWrittenCacheBytes
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(dir, "streams"), 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	quota, err := newDiskQuota(dir, opts.MaxDiskBytes, opts.MaxDiskPercent)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if seg := quota.segmentBytes(); seg > 0 {
		opts.MaxSegmentBytes = min(opts.MaxSegmentBytes, seg)
	}
	metrics, err := newFSMetrics(opts.Metrics, quota)
	if err != nil {
		return nil, fmt.Errorf("open store: metrics: %w", err)
	}
	if err := checkIndexPresent(dir); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{
		Timeout:      time.Second,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) { // another process holds the index's file lock
		return nil, fmt.Errorf("open store: %s is in use by another process (another kvs server on this data directory?): "+
			"only one can open it at a time", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open store index: %w", err)
	}
	// Only now, holding the lock: the probe files may be those of another process's Ready.
	removeProbes(dir)
	s := &FS{
		dir: dir, opts: opts, log: log, db: db, quota: quota, metrics: metrics,
		streams:   make(map[string]*fsStream),
		queue:     make(chan *appendRequest, maxBatch),
		synced:    make(chan *syncingBatch, maxSyncing),
		syncedAny: make(chan struct{}, 1),
		syncData:  fsync.Data,
		removeAll: os.RemoveAll,
		written:   writtenCache{budget: opts.WrittenCacheBytes},
	}
	if opts.removeAll != nil {
		s.removeAll = opts.removeAll
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.wg.Add(2)
	go s.syncLoop()
	go s.indexLoop()
	return s, nil
}

// checkIndexPresent refuses a data directory that holds stream directories but no index.db (a
// backup restored without it, a file moved away): opened, it would get an empty registry, and
// load would take every stream directory for a deleted stream's leftovers and remove it.
func checkIndexPresent(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "index.db")); !errors.Is(err, fs.ErrNotExist) {
		return nil // there, or a problem bolt.Open will report
	}
	ents, err := os.ReadDir(filepath.Join(dir, "streams"))
	if err != nil {
		return nil
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() { // stray files (.DS_Store) are not streams
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("open store: %s is missing but %s holds %d stream directories: kvs does not start without "+
		"their index rather than delete them; restore index.db, or move the stream directories away to start empty",
		filepath.Join(dir, "index.db"), filepath.Join(dir, "streams"), n)
}

// load reads the registry, recovers each stream and removes directories of deleted streams.
func (s *FS) load() error {
	var recs []streamRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketStreams)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketRetired); err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var r streamRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("registry entry %q: %w", k, err)
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, r := range recs {
		st := &fsStream{id: r.ID, dir: s.streamDir(r.ID), segs: map[uint64]*segment{}}
		st.setInfo(r.Stream)
		if err := s.recoverStream(st); err != nil {
			return fmt.Errorf("recover stream %s: %w", r.Name, err)
		}
		if err := s.countStream(st); err != nil {
			return fmt.Errorf("stream %s: %w", r.Name, err)
		}
		s.streams[r.Name] = st
		live[filepath.Base(st.dir)] = true
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, "streams"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !live[e.Name()] {
			// A stream deleted from the registry whose files were not removed yet. Files that
			// cannot be removed cost only their space: they are not a reason to stay down.
			dir := filepath.Join(s.dir, "streams", e.Name())
			if err := s.removeAll(dir); err != nil {
				s.log.Warn("the files of a deleted stream could not be removed; they stay until the next start", "dir", dir, "error", err)
			}
		}
	}
	return nil
}

// streamDir names a stream's directory by its internal id: stream names never reach the
// filesystem, and a re-created stream gets a new id and so an empty directory.
func (s *FS) streamDir(id uint64) string {
	return filepath.Join(s.dir, "streams", fmt.Sprintf("%016x", id))
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }

// Recovered returns what OpenFS repaired: records cut from segment tails, index entries dropped
// for missing data and records re-indexed. The slice is shared; do not modify it.
func (s *FS) Recovered() []RecoveryReport { return s.recovered }

// lookup returns the named stream and a copy of its metadata.
func (s *FS) lookup(name string) (*fsStream, Stream, error) {
	if s.closed.Load() {
		return nil, Stream{}, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.streams[name]
	if !ok {
		return nil, Stream{}, fmt.Errorf("%w: %s", ErrStreamNotFound, name)
	}
	return st, st.info, nil
}

func putStream(tx *bolt.Tx, r streamRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketStreams).Put([]byte(r.Name), v)
}

// CreateStream implements Store.
func (s *FS) CreateStream(_ context.Context, info Stream) error {
	if info.Name == "" {
		return errors.New("store: create stream: empty name")
	}
	if s.closed.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.streams[info.Name]; ok {
		return fmt.Errorf("%w: %s", ErrStreamExists, info.Name)
	}
	info = copyStream(info)
	var id, start uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		id = getU64(meta.Get(keyNextID)) + 1
		if err := meta.Put(keyNextID, u64(id)); err != nil {
			return err
		}
		b, err := createDataBucket(tx, id)
		if err != nil {
			return err
		}
		// A stream deleted under this name may have handed out numbers up to its hwm: this one
		// starts there, and says so in its own hwm, which recovery starts from.
		if start = getU64(tx.Bucket(bucketRetired).Get([]byte(info.Name))); start > 0 {
			if err := b.Put(keyHWM, u64(start)); err != nil {
				return err
			}
		}
		return putStream(tx, streamRecord{info, id})
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", info.Name, err)
	}
	st := &fsStream{id: id, dir: s.streamDir(id), next: max(1, start), hwm: start, nextSeq: 1, segs: map[uint64]*segment{}}
	st.setInfo(info)
	s.streams[info.Name] = st
	return nil
}

// GetStream implements Store.
func (s *FS) GetStream(_ context.Context, name string) (Stream, error) {
	_, info, err := s.lookup(name)
	return copyStream(info), err
}

// ListStreams implements Store.
func (s *FS) ListStreams(_ context.Context) ([]Stream, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedStreams(s.streams, func(st *fsStream) Stream { return st.info }), nil
}

// UpdateStream implements Store. Renaming through fn is refused.
func (s *FS) UpdateStream(_ context.Context, name string, fn func(*Stream) error) (Stream, error) {
	if s.closed.Load() {
		return Stream{}, ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[name]
	if !ok {
		return Stream{}, fmt.Errorf("%w: %s", ErrStreamNotFound, name)
	}
	c, err := updatedStream(st.info, name, fn)
	if err != nil {
		return Stream{}, err
	}
	c = copyStream(c)
	if err := s.db.Update(func(tx *bolt.Tx) error { return putStream(tx, streamRecord{c, st.id}) }); err != nil {
		return Stream{}, fmt.Errorf("update stream %s: %w", name, err)
	}
	st.setInfo(c)
	return copyStream(c), nil
}

// DeleteStream implements Store. The version check, the registry entry and the index go in one
// step under FS.mu (which UpdateStream also holds); the segment files are removed after it
// (OpenFS removes leftovers of a crash in between, or of a removal that failed). Appends in flight fail with
// ErrStreamNotFound.
func (s *FS) DeleteStream(_ context.Context, name, version string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	st, ok := s.streams[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrStreamNotFound, name)
	}
	if version != "" && st.info.Version != version {
		s.mu.Unlock()
		return fmt.Errorf("delete stream %s: %w", name, ErrVersionMismatch)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketStreams).Delete([]byte(name)); err != nil {
			return err
		}
		// Every number the stream handed out is below its persisted hwm: a stream created again
		// under the name starts there (CreateStream).
		hwm := getU64(tx.Bucket(dataBucketName(st.id)).Get(keyHWM))
		retired := tx.Bucket(bucketRetired)
		if hwm > getU64(retired.Get([]byte(name))) {
			if err := retired.Put([]byte(name), u64(hwm)); err != nil {
				return err
			}
		}
		return tx.DeleteBucket(dataBucketName(st.id))
	})
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("delete stream %s: %w", name, err)
	}
	delete(s.streams, name)
	s.mu.Unlock()

	st.mu.Lock()
	st.deleted = true
	s.closeMu.RLock() // as in write: Close must not close the queue while seal sends to it
	s.seal(st)
	s.closeMu.RUnlock()
	// A segment with no append in flight has no request queued that would close its file: the
	// active segment a purge detached (purgeChoose) and had not deleted yet stayed open, its
	// disk space taken until the process ended (Close closes only the streams it still has).
	for _, g := range st.segs {
		if g.pending.Load() == 0 {
			_ = g.closeFile()
		}
	}
	st.mu.Unlock()
	// The stream is deleted: files that cannot be removed now (one held open where the system
	// does not allow removing it, leftovers on a network filesystem) go at the next start. An
	// error here made the API answer 500 for a delete that had happened, and the client's retry
	// ResourceNotFoundException.
	prefix := st.dir + string(filepath.Separator)
	s.written.forget(func(path string) bool { return strings.HasPrefix(path, prefix) })
	if err := s.removeAll(st.dir); err != nil {
		s.log.Warn("stream deleted; its files could not be removed and stay until the next start", "stream", name, "dir", st.dir, "error", err)
	}
	return nil
}

// NextNumber implements Store. The high-water mark is persisted numberBlock numbers ahead.
func (s *FS) NextNumber(_ context.Context, stream string) (uint64, error) {
	st, _, err := s.lookup(stream)
	if err != nil {
		return 0, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.reserveNumbers(st, stream); err != nil {
		return 0, err
	}
	n := st.next
	st.next++
	return n, nil
}

// reserveNumbers persists a new high-water mark when st.next has reached it. st.mu is held.
func (s *FS) reserveNumbers(st *fsStream, stream string) error {
	if st.deleted {
		return fmt.Errorf("%w: %s", ErrStreamNotFound, stream)
	}
	if st.next < st.hwm {
		return nil
	}
	hwm := st.next + numberBlock
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, stream)
		}
		return b.Put(keyHWM, u64(hwm))
	})
	if err != nil {
		return fmt.Errorf("next number %s: %w", stream, err)
	}
	st.hwm = hwm
	return nil
}

// Prepare implements Store: it reserves fragment numbers when none are left and opens the
// stream's active segment (creating its directory and file, fsyncing both directory entries),
// so that an upload's first append only writes. A stream that keeps no data gets no segment.
func (s *FS) Prepare(_ context.Context, stream string) error {
	st, info, err := s.lookup(stream)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.reserveNumbers(st, stream); err != nil {
		return err
	}
	if info.RetentionHours <= 0 || st.active != nil {
		return nil
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if _, err := s.segmentFor(st, 0); err != nil {
		return fmt.Errorf("prepare %s: %w", stream, err)
	}
	return nil
}

// Close waits for appends in flight, stops the background goroutines and closes the files.
// Later calls on the store return ErrClosed.
func (s *FS) Close() error {
	s.closeMu.Lock()
	if s.closed.Swap(true) {
		s.closeMu.Unlock()
		return nil
	}
	close(s.queue)
	s.closeMu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, st := range s.streams {
		st.mu.Lock()
		for _, seg := range st.segs {
			errs = append(errs, seg.closeFile())
		}
		st.mu.Unlock()
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

// Stats implements Store from counters kept as appends, deletions and recovery go: no index
// scan. Bytes are the segment files of every stream plus the index file.
func (s *FS) Stats(context.Context) (Stats, error) {
	if s.closed.Load() {
		return Stats{}, ErrClosed
	}
	var out Stats
	s.mu.RLock()
	for _, st := range s.streams {
		out.Streams++
		out.Fragments += st.frags.Load()
		out.Bytes += st.bytes.Load()
	}
	s.mu.RUnlock()
	out.Bytes += s.indexBytes()
	return out, nil
}

// indexBytes is the size of the index file (0 when it cannot be read).
func (s *FS) indexBytes() int64 {
	fi, err := os.Stat(filepath.Join(s.dir, "index.db"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// countStream sets the stream's byte and fragment counters after recovery: the sizes of its
// segment files and the fragments its segment summaries count.
func (s *FS) countStream(st *fsStream) error {
	files, err := listSegments(st.dir)
	if err != nil {
		return err
	}
	var size int64
	for _, path := range files {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		size += fi.Size()
	}
	st.bytes.Store(size)
	var n int64
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			return nil
		}
		return b.Bucket(bucketSegs).ForEach(func(_, v []byte) error {
			info, err := decodeSegmentInfo(v)
			n += int64(info.Count)
			return err
		})
	})
	st.frags.Store(n)
	return err
}
