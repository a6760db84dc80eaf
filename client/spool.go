package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/openkvs/kvs/internal/fsync"
	"github.com/openkvs/kvs/internal/piecewrite"
)

// Spool size defaults and limits.
const (
	// DefaultSpoolMaxBytes is SpoolConfig.MaxBytes when it is 0: 1 GiB, 71 minutes of a 2 Mbit/s
	// camera.
	DefaultSpoolMaxBytes = 1 << 30
	// MinSpoolMaxBytes is the smallest MaxBytes accepted.
	MinSpoolMaxBytes = 256 << 10
)

// SpoolConfig configures a Spool.
type SpoolConfig struct {
	// Dir is the spool directory; it is created if missing. One process at a time may use it
	// (OpenSpool takes a lock on it).
	Dir string
	// Stream is the stream the spooled fragments go to. A spool remembers it, and refuses to open
	// for another stream while it holds fragments, so that no fragment ever goes to the wrong one.
	Stream string
	// MaxBytes bounds the spool's files (default DefaultSpoolMaxBytes, at least
	// MinSpoolMaxBytes). When a fragment does not fit, the oldest fragments are dropped to make
	// room, a segment file at a time (a sixteenth of MaxBytes, between 64 KiB and 64 MiB), and
	// Notice is told; the same when the disk is full first (ENOSPC).
	MaxBytes int64
	// Notice, if set, receives what a user should hear about: fragments dropped because the spool
	// is full, damaged records cut when the spool was opened, files that could not be removed. It
	// is called synchronously, from the goroutine that caused it.
	Notice func(msg string)

	segmentBytes int64 // tests: segment size (default MaxBytes/16 within 64 KiB..64 MiB)
}

// SpoolStats describes a spool.
type SpoolStats struct {
	// Fragments counts the fragments the spool holds that are not final yet: the backlog, and
	// the fragments in flight. Bytes is the size of its segment files (the one being appended to
	// keeps up to 4 MiB of final records).
	Fragments int
	Bytes     int64
	// Dropped and DroppedBytes count the fragments dropped because the spool was full, since it
	// was opened; Corrupt counts records that could not be read back (a damaged disk).
	Dropped      int
	DroppedBytes int64
	Corrupt      int
	// Recovered is the number of fragments the spool held when it was opened, and RecoveredFrom
	// and RecoveredTo the producer timestamps of the oldest and the newest of them; Cut is the
	// bytes of torn records cut from its end then (a crash in the middle of a write).
	Recovered                  int
	RecoveredFrom, RecoveredTo time.Time
	Cut                        int64
}

// Spool is a directory where a Producer keeps every fragment, synced to disk, until the server has
// made it final: a power cut or a crash loses nothing that Send accepted, and an endpoint that is
// away for hours only makes the spool grow (up to MaxBytes, then the oldest fragments go). A
// Producer with a spool sends what the spool holds, oldest first, before the fragments given to
// Send; a spool left by an earlier process is sent first the same way.
//
// The directory holds segment files (NNNNNNNNNNNNNNNN.spool, named by the sequence number of their
// first record), a file "acked" with the highest sequence number up to which every record is
// final, a file "stream" with the stream name, and a lock file. A segment goes as soon as all its
// records are final. On open, a torn record at the end of the last segment (a crash during its
// write) is cut, with the segment's whole records kept.
//
// Delivery is at least once: a fragment whose final ACK came just before a crash, before
// "acked" was written, is sent again, with the same bytes and producer timestamp.
//
// A Spool is used by one Producer; Stats and Close are safe for concurrent use.
type Spool struct {
	cfg  SpoolConfig
	lock *os.File

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when a record is added or the spool is sealed
	freed   chan struct{} // closed and replaced when a segment is removed or the spool closes (waitRoom)
	segs    []*spoolSegment
	active  *os.File // the last segment's file, open for appends; nil when none
	nextSeq uint64
	acked   uint64              // every record with Seq <= acked is final
	doneSet map[uint64]struct{} // final records above acked+1
	saved   uint64              // acked as last written to the acked file
	savedAt time.Time           // when
	cursor  uint64              // next sequence number next hands out
	curSeg  *spoolSegment       // segment of the cursor, nil: look it up
	curOff  int64               // offset in curSeg of the next record to read
	curSeq  uint64              // sequence number the record at curOff must have
	writing *spoolSegment       // the segment append is writing to without the lock
	sealed  bool
	closed  bool
	stats   SpoolStats
	notices []string // raised with s.mu held, for flushNotices
}

// spoolSegment is one segment file.
type spoolSegment struct {
	path        string
	first, last uint64 // sequence numbers of its first and last record (last < first: empty)
	count       int
	size        int64 // bytes of whole records (the file's size)
	// resumeOff and resumeSeq, when resumeOff is not 0, are where reading it starts again after
	// a damaged record made the rest of it be skipped: the records appended after the skip.
	resumeOff int64
	resumeSeq uint64
}

const (
	spoolSuffix    = ".spool"
	spoolAckedFile = "acked"
	spoolStream    = "stream"
	spoolLockFile  = "lock"
)

// OpenSpool opens (or creates) the spool in cfg.Dir for cfg.Stream, recovering what an earlier
// process left: segments are checked, a torn record at the end is cut (and told to Notice), and
// the records not yet final are queued to be sent first.
func OpenSpool(cfg SpoolConfig) (*Spool, error) {
	if cfg.Dir == "" || cfg.Stream == "" {
		return nil, errors.New("spool: a directory and a stream are required")
	}
	cfg.MaxBytes = cmp.Or(cfg.MaxBytes, DefaultSpoolMaxBytes)
	if cfg.MaxBytes < MinSpoolMaxBytes {
		return nil, fmt.Errorf("spool %s: maximum size %d bytes is below the minimum %d", cfg.Dir, cfg.MaxBytes, MinSpoolMaxBytes)
	}
	if cfg.segmentBytes == 0 {
		cfg.segmentBytes = min(max(cfg.MaxBytes/16, 64<<10), 64<<20)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := lockSpool(filepath.Join(cfg.Dir, spoolLockFile))
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
	}
	s := &Spool{cfg: cfg, lock: lock, changed: make(chan struct{}), doneSet: map[uint64]struct{}{}}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
	}
	return s, nil
}

// notice tells Notice now: s.mu is not held. noticeLocked is for code that holds s.mu (and
// maybe the producer's lock, through done): the message waits for flushNotices, which the
// operation calls once it holds neither, so that a Notice that asks Stats (the spool's or the
// producer's) cannot deadlock. A message raised under done waits for the next append, next or
// Close.
func (s *Spool) notice(format string, args ...any) {
	if s.cfg.Notice != nil {
		s.cfg.Notice(fmt.Sprintf(format, args...))
	}
}

func (s *Spool) noticeLocked(format string, args ...any) {
	if s.cfg.Notice != nil {
		s.notices = append(s.notices, fmt.Sprintf(format, args...))
	}
}

// flushNotices delivers the messages noticeLocked queued. s.mu must not be held.
func (s *Spool) flushNotices() {
	s.mu.Lock()
	msgs := s.notices
	s.notices = nil
	s.mu.Unlock()
	for _, m := range msgs {
		s.cfg.Notice(m)
	}
}

// writeFileAtomic replaces path with data (a temporary file renamed over it). With durable,
// the data is fdatasynced before the rename and the directory after it (the stream file: a
// spool whose name file is lost cannot be opened for its stream); without, losing the last
// update to a crash only repeats work (the acked mark).
func writeFileAtomic(path string, data []byte, durable bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = fsync.Data(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && durable {
		err = fsync.Dir(filepath.Dir(path))
	}
	return err
}

// Windows' errors for a full disk: ERROR_HANDLE_DISK_FULL and ERROR_DISK_FULL (on Unix the
// same numbers are other errors).
const (
	errorHandleDiskFull syscall.Errno = 39
	errorDiskFull       syscall.Errno = 112
)

// diskFull says whether err, from a write on system goos (runtime.GOOS), is a full disk. On
// Windows a write to a full disk fails with ERROR_DISK_FULL, which is not syscall.ENOSPC there
// (an invented number that no system call returns): the spool's "drop the oldest" on a full disk
// never ran there, and appends failed instead.
func diskFull(err error, goos string) bool {
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	var errno syscall.Errno
	return goos == "windows" && errors.As(err, &errno) && (errno == errorDiskFull || errno == errorHandleDiskFull)
}

// append writes one record (stream header and fragment), synced, and returns its sequence number.
// When the spool would grow over MaxBytes the oldest segments are dropped first. Only one
// goroutine may append at a time (the Producer's Send).
func (s *Spool) append(header, body []byte, timecode int64, scale uint64) (uint64, error) {
	// Notices go out after the deferred unlock below.
	defer s.flushNotices()
	h := spoolRecordHeader{HeaderLen: uint32(len(header)), BodyLen: uint32(len(body)), Timecode: timecode, Scale: scale} //nolint:gosec // bounded below
	size := h.size()
	switch {
	case len(header) == 0 || len(header) > maxSpoolStreamHeader || len(body) == 0 || len(body) > maxSpoolFragment:
		return 0, fmt.Errorf("spool: a fragment of %d bytes (stream header %d) cannot be spooled", len(body), len(header))
	case size > s.cfg.MaxBytes/2:
		return 0, fmt.Errorf("spool %s: a fragment of %d bytes is over half the spool's maximum size (%d bytes): raise the maximum", s.cfg.Dir, size, s.cfg.MaxBytes)
	}
	s.mu.Lock()
	if s.sealed || s.closed {
		s.mu.Unlock()
		return 0, errors.New("spool: append after close")
	}
	s.makeRoom(size)
	g, f, err := s.target()
	for diskFull(err, runtime.GOOS) && s.dropForSpace(nil) {
		g, f, err = s.target()
	}
	if err != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("spool %s: %w", s.cfg.Dir, err)
	}
	h.Seq = s.nextSeq
	off := g.size
	s.writing = g
	s.mu.Unlock()

	// The write and its sync run without the lock: next and done go on meanwhile. Nothing else
	// writes to the active file, and nothing reads past g.size.
	crc := crc32.Update(crc32.Checksum(header, castagnoli), castagnoli, body)
	h.PayloadCRC = crc
	// The record header and the stream header (a few hundred bytes) go in one write.
	head := append(h.encode(make([]byte, 0, spoolRecordHeaderSize+len(header))), header...)
	for {
		if _, err = f.WriteAt(head, off); err == nil {
			err = piecewrite.WriteAt(f, body, off+int64(len(head))) // as the FS store writes a fragment
		}
		if err == nil {
			err = fsync.Data(f)
		}
		if err == nil {
			break
		}
		_ = f.Truncate(off) // do not leave half a record in front of the next one
		// A disk full before MaxBytes (a small disk, or other files on it): the oldest fragments
		// go, as at MaxBytes, rather than the newest.
		s.mu.Lock()
		retry := diskFull(err, runtime.GOOS) && s.dropForSpace(g)
		s.mu.Unlock()
		if !retry {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing = nil
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", s.cfg.Dir, err)
	}
	if g.count == 0 {
		g.first = h.Seq
	}
	g.last = h.Seq
	g.count++
	g.size += size
	s.nextSeq++
	s.stats.Fragments++
	s.stats.Bytes += size
	s.signal()
	return h.Seq, nil
}

// signal wakes whoever waits in next. s.mu is held.
func (s *Spool) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// target returns the segment the next record goes to, starting a new one when there is none open
// or the open one is full. s.mu is held.
func (s *Spool) target() (*spoolSegment, *os.File, error) {
	if s.active != nil {
		g := s.segs[len(s.segs)-1]
		if g.size < s.cfg.segmentBytes {
			return g, s.active, nil
		}
		s.active.Close()
		s.active = nil
	}
	path := filepath.Join(s.cfg.Dir, fmt.Sprintf("%016x%s", s.nextSeq, spoolSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, err
	}
	// The file's directory entry must be durable before a record in it counts as spooled.
	if err := fsync.Dir(s.cfg.Dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, nil, err
	}
	g := &spoolSegment{path: path, first: s.nextSeq, last: s.nextSeq - 1}
	s.segs = append(s.segs, g)
	s.active = f
	return g, f, nil
}

// makeRoom drops the oldest segments until size more bytes fit in MaxBytes. s.mu is held.
func (s *Spool) makeRoom(size int64) {
	total := int64(0)
	for _, g := range s.segs {
		total += g.size
	}
	dropped, droppedBytes := 0, int64(0)
	for total+size > s.cfg.MaxBytes && len(s.segs) > 0 {
		total -= s.segs[0].size
		n, b := s.dropOldest() // append calls makeRoom while nothing is being written
		dropped += n
		droppedBytes += b
	}
	if dropped > 0 {
		s.stats.Dropped += dropped
		s.stats.DroppedBytes += droppedBytes
		s.noticeLocked("spool %s is full (%d bytes): dropped the %d oldest fragments (%d bytes); %d dropped since start",
			s.cfg.Dir, s.cfg.MaxBytes, dropped, droppedBytes, s.stats.Dropped)
	}
}

// dropForSpace drops the oldest segment when the disk is full (ENOSPC) before the spool reaches
// MaxBytes, unless it is keep (the segment being written to); it reports whether it dropped one.
// s.mu is held.
func (s *Spool) dropForSpace(keep *spoolSegment) bool {
	if len(s.segs) == 0 || s.segs[0] == keep {
		return false
	}
	dropped, droppedBytes := s.dropOldest()
	s.stats.Dropped += dropped
	s.stats.DroppedBytes += droppedBytes
	s.noticeLocked("spool %s: the disk is full: dropped the %d oldest fragments (%d bytes); %d dropped since start",
		s.cfg.Dir, dropped, droppedBytes, s.stats.Dropped)
	return true
}

// dropOldest removes the oldest segment, and returns the count and share of bytes of its
// records that were not final. s.mu is held.
func (s *Spool) dropOldest() (n int, size int64) {
	g := s.segs[0]
	if len(s.segs) == 1 && s.active != nil {
		s.active.Close()
		s.active = nil
	}
	n, size = s.pendingIn(g)
	s.removeSegment(g)
	return n, size
}

// pendingIn counts the records of g that are not final, and their share of its bytes. A segment's
// records have consecutive sequence numbers.
func (s *Spool) pendingIn(g *spoolSegment) (n int, size int64) {
	if from := max(g.first, s.acked+1); from <= g.last {
		n = int(g.last - from + 1) //nolint:gosec // at most a segment's records
	}
	for q := range s.doneSet {
		if q >= g.first && q <= g.last && q > s.acked {
			n--
		}
	}
	if g.count > 0 {
		size = g.size * int64(n) / int64(g.count)
	}
	return n, size
}

// removeSegment deletes g's file and forgets it; its records that were not final leave the
// counts. s.mu is held.
func (s *Spool) removeSegment(g *spoolSegment) {
	n, _ := s.pendingIn(g)
	s.stats.Fragments -= n
	s.stats.Bytes -= g.size
	for q := g.first; q <= g.last; q++ {
		delete(s.doneSet, q)
	}
	if s.curSeg == g {
		s.curSeg = nil
	}
	if s.cursor <= g.last {
		s.cursor = g.last + 1
		s.curSeg = nil
	}
	s.segs = slices.DeleteFunc(s.segs, func(x *spoolSegment) bool { return x == g })
	if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.noticeLocked("spool: removing %s: %v", g.path, err)
	}
	s.signalFreed()
}

// signalFreed wakes waitRoom's waiters. s.mu is held.
func (s *Spool) signalFreed() {
	if s.freed != nil {
		close(s.freed)
		s.freed = nil
	}
}

// waitRoom waits until a record of size more bytes fits in the spool without dropping older
// ones, the spool is closed, ctx is done (its error) or stop is closed (nil). It tells Notice
// once when it has to wait.
func (s *Spool) waitRoom(ctx context.Context, stop <-chan struct{}, size int64) error {
	if size > s.cfg.MaxBytes/2 {
		return nil // append refuses it
	}
	noticed := false
	for {
		s.mu.Lock()
		total := int64(0)
		for _, g := range s.segs {
			total += g.size
		}
		if s.closed || s.sealed || total+size <= s.cfg.MaxBytes {
			s.mu.Unlock()
			return nil
		}
		if !noticed {
			noticed = true
			s.noticeLocked("spool %s is full (%d bytes): waiting for the server to take fragments before reading more", s.cfg.Dir, s.cfg.MaxBytes)
		}
		if s.freed == nil {
			s.freed = make(chan struct{})
		}
		freed := s.freed
		s.mu.Unlock()
		s.flushNotices()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return nil
		}
	}
}

// finalRollBytes is how much of acknowledged fragments the segment being appended to may keep:
// a few fragments, so that a live stream creates a file every few fragments, not each one.
const finalRollBytes = 4 << 20

// seal ends appends: next returns io.EOF once every record was handed out.
func (s *Spool) seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sealed {
		s.sealed = true
		s.signal()
	}
}

// Stats returns what the spool holds and what it dropped. Safe for concurrent use.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.cfg.Dir }

// Close closes the spool's files and releases its lock; what it holds stays on disk for the next
// OpenSpool. Close the Producer that uses it first.
func (s *Spool) Close() error {
	defer s.flushNotices() // after the deferred unlock below
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.saveAcked()
	s.closed = true
	s.signal()
	s.signalFreed()
	var err error
	if s.active != nil {
		err = s.active.Close()
		s.active = nil
		s.removeFinal() // the last segment too, when all of it is final
	}
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	return err
}
