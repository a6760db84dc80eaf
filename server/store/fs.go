package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FSOptions configures OpenFS. The zero value gives the defaults.
type FSOptions struct {
	// MaxSegmentBytes rolls a stream to a new segment file before a record would take the current
	// one past this size (a single larger record still gets a segment of its own). Default 64 MiB.
	MaxSegmentBytes int64
	// MaxSegmentAge rolls to a new segment when the current one was created this long ago, so
	// retention can drop data of slow streams in time. Default 1 h.
	MaxSegmentAge time.Duration
	// Logger receives recovery reports. Default: discard.
	Logger *slog.Logger

	now func() time.Time // segment age clock; tests replace it
}

const (
	defaultMaxSegmentBytes = 64 << 20
	defaultMaxSegmentAge   = time.Hour
	// numberBlock is how far ahead of the numbers handed out the persisted high-water mark runs:
	// one bbolt commit per numberBlock NextNumber calls; a restart skips the unused rest.
	numberBlock = 1000
	// eagerVerifyLimit: Open reads records up to this size whole and checks them before
	// returning; larger ones stream and report corruption at the end.
	eagerVerifyLimit = 4 << 20
	// maxBatch caps how many appends one batch takes.
	maxBatch = 1024
	// maxSyncing is how many batches may be fdatasyncing at once: more requests in flight let
	// the disk and the filesystem journal merge work (see BenchmarkDiskFdatasync/files=64).
	maxSyncing = 8
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
	wg      sync.WaitGroup

	recovered []RecoveryReport

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
}

// segment is one open segment file being appended to.
type segment struct {
	seq     uint64
	path    string
	f       *os.File
	size    int64 // bytes written (guarded by fsStream.mu)
	created time.Time
	pending atomic.Int64 // records written but not yet indexed
	failed  atomic.Bool  // an fdatasync failed: never write to it again

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
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{
		Timeout:      time.Second,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open store index: %w", err)
	}
	s := &FS{
		dir: dir, opts: opts, log: log, db: db,
		streams: make(map[string]*fsStream),
		queue:   make(chan *appendRequest, maxBatch),
		synced:  make(chan *syncingBatch, maxSyncing),
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
		st := &fsStream{id: r.ID, dir: s.streamDir(r.ID), info: r.Stream, segs: map[uint64]*segment{}}
		if err := s.recoverStream(st); err != nil {
			return fmt.Errorf("recover stream %s: %w", r.Name, err)
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
			// A stream deleted from the registry whose files were not removed yet.
			if err := os.RemoveAll(filepath.Join(s.dir, "streams", e.Name())); err != nil {
				return err
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
	var id uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		id = getU64(meta.Get(keyNextID)) + 1
		if err := meta.Put(keyNextID, u64(id)); err != nil {
			return err
		}
		if _, err := createDataBucket(tx, id); err != nil {
			return err
		}
		return putStream(tx, streamRecord{info, id})
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", info.Name, err)
	}
	s.streams[info.Name] = &fsStream{id: id, dir: s.streamDir(id), info: info, next: 1, nextSeq: 1, segs: map[uint64]*segment{}}
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
	out := make([]Stream, 0, len(s.streams))
	for _, st := range s.streams {
		out = append(out, copyStream(st.info))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
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
	c := copyStream(st.info)
	if err := fn(&c); err != nil {
		return Stream{}, err
	}
	if c.Name != name {
		return Stream{}, errRename
	}
	c = copyStream(c)
	if err := s.db.Update(func(tx *bolt.Tx) error { return putStream(tx, streamRecord{c, st.id}) }); err != nil {
		return Stream{}, fmt.Errorf("update stream %s: %w", name, err)
	}
	st.info = c
	return copyStream(c), nil
}

// DeleteStream implements Store. The version check, the registry entry and the index go in one
// step under FS.mu (which UpdateStream also holds); the segment files are removed after it
// (OpenFS removes leftovers of a crash in between). Appends in flight fail with
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
	s.seal(st)
	st.mu.Unlock()
	if err := os.RemoveAll(st.dir); err != nil {
		return fmt.Errorf("delete stream %s: %w", name, err)
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
