package store

// The FS store's read paths: index lookups in bbolt read transactions, record reads from the
// segment files with their checks.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openkvs/kvs/internal/record"
)

// view runs fn on the stream's data bucket in a read transaction.
func (s *FS) view(stream string, fn func(st *fsStream, b *bolt.Bucket) error) error {
	st, _, err := s.lookup(stream)
	if err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucketName(st.id))
		if b == nil {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, stream)
		}
		return fn(st, b)
	})
}

func (s *FS) entry(stream string, number uint64) (*fsStream, indexEntry, error) {
	var (
		e   indexEntry
		st0 *fsStream
	)
	err := s.view(stream, func(st *fsStream, b *bolt.Bucket) error {
		st0 = st
		v := b.Bucket(bucketNumber).Get(u64(number))
		if v == nil {
			return fmt.Errorf("%w: %s/%d", ErrFragmentNotFound, stream, number)
		}
		var err error
		e, err = decodeIndexEntry(number, v)
		return err
	})
	return st0, e, err
}

// Fragment implements Store.
func (s *FS) Fragment(_ context.Context, stream string, number uint64) (FragmentMeta, error) {
	_, e, err := s.entry(stream, number)
	if err != nil {
		return FragmentMeta{}, err
	}
	return e.meta(), nil
}

// Open implements Store. The record header is checked against the index, and the payload
// against its CRC, before Open returns: ErrCorrupt instead of bad bytes, whatever the size. The
// CRC is computed over a mapping of the file on unix (checksumFile), so checking does not copy the
// bytes out. The reader is a section of the segment file (payloadReader): io.Copy to a connection
// of server.Listener sends it with sendfile(2). It stays valid if retention or DeleteStream
// removes the fragment meanwhile.
//
// Between the check and the reading the bytes are those of the page cache; should the kernel
// drop them meanwhile and the disk return other bytes, those go out unchecked. AppendPayload
// checks the bytes it returns.
func (s *FS) Open(_ context.Context, stream string, number uint64) (io.ReadCloser, FragmentMeta, error) {
	f, e, h, err := s.openRecord(stream, number)
	if err != nil {
		return nil, FragmentMeta{}, err
	}
	if err := checkPayload(f, e, h); err != nil {
		f.Close()
		return nil, FragmentMeta{}, fmt.Errorf("open %s/%d: %w", stream, number, err)
	}
	return &payloadReader{SectionReader: io.NewSectionReader(f, e.Offset+recordHeaderSize, e.Size), f: f}, e.meta(), nil
}

// checkPayload checks that the payload of record e (header h) is whole in f and matches its CRC.
func checkPayload(f *os.File, e indexEntry, h recordHeader) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < e.Offset+recordHeaderSize+e.Size {
		return fmt.Errorf("%w: %w", ErrCorrupt, record.ErrTornPayload)
	}
	sum, err := checksumFile(f, e.Offset+recordHeaderSize, e.Size)
	if err != nil {
		return err
	}
	if sum != h.PayloadCRC {
		return fmt.Errorf("%w: %w", ErrCorrupt, record.ErrPayloadCRC)
	}
	return nil
}

// payloadReader reads a checked payload from its segment file.
type payloadReader struct {
	*io.SectionReader
	f *os.File
}

// WriteTo hands the file section to w's ReadFrom, when it has one: a connection of
// server.Listener sends it with sendfile(2).
func (p *payloadReader) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, p.SectionReader) }

func (p *payloadReader) Close() error { return p.f.Close() }

// readPayload appends the payload of record e (header h) in f to b and checks its CRC; b is
// returned unchanged on error.
func readPayload(f *os.File, e indexEntry, h recordHeader, b []byte) ([]byte, error) {
	start := len(b)
	b = slices.Grow(b, int(e.Size))[:start+int(e.Size)]
	if _, err := f.ReadAt(b[start:], e.Offset+recordHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, record.ErrTornPayload)
		}
		return b[:start], err
	}
	if crc32.Checksum(b[start:], record.Castagnoli) != h.PayloadCRC {
		return b[:start], fmt.Errorf("%w: %w", ErrCorrupt, record.ErrPayloadCRC)
	}
	return b, nil
}

// openRecord opens the segment that holds fragment number and checks the record header against
// the index. The caller closes the file.
func (s *FS) openRecord(stream string, number uint64) (*os.File, indexEntry, recordHeader, error) {
	st, e, err := s.entry(stream, number)
	if err != nil {
		return nil, e, recordHeader{}, err
	}
	f, err := openSegment(filepath.Join(st.dir, segmentName(e.Segment)), os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		// Purged between the index lookup and here.
		return nil, e, recordHeader{}, fmt.Errorf("%w: %s/%d", ErrFragmentNotFound, stream, number)
	}
	if err != nil {
		return nil, e, recordHeader{}, fmt.Errorf("open %s/%d: %w", stream, number, err)
	}
	h, err := checkRecordHeader(f, e)
	if err != nil {
		f.Close()
		return nil, e, recordHeader{}, fmt.Errorf("open %s/%d: %w", stream, number, err)
	}
	return f, e, h, nil
}

// checkRecordHeader reads the record header at e.Offset and checks it against the index entry.
func checkRecordHeader(f *os.File, e indexEntry) (recordHeader, error) {
	var hb [recordHeaderSize]byte
	if _, err := f.ReadAt(hb[:], e.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return recordHeader{}, fmt.Errorf("%w: record past the end of its segment", ErrCorrupt)
		}
		return recordHeader{}, err
	}
	h, err := decodeRecordHeader(hb[:])
	if err != nil {
		return recordHeader{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if h.Number != e.Number || int64(h.Length) != e.Size {
		return recordHeader{}, fmt.Errorf("%w: header (fragment %d, %d bytes) does not match the index", ErrCorrupt, h.Number, h.Length)
	}
	return h, nil
}

// Range implements Store.
func (s *FS) Range(_ context.Context, stream string, from uint64, limit int) ([]FragmentMeta, error) {
	var out []FragmentMeta
	err := s.view(stream, func(_ *fsStream, b *bolt.Bucket) error {
		c := b.Bucket(bucketNumber).Cursor()
		for k, v := c.Seek(u64(from)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			e, err := decodeIndexEntry(getU64(k), v)
			if err != nil {
				return err
			}
			out = append(out, e.meta())
		}
		return nil
	})
	return out, err
}

// TimeRange implements Store with one cursor scan of the (time, number) index.
func (s *FS) TimeRange(_ context.Context, stream string, kind TimeKind, start, end time.Time, after Cursor, limit int) ([]FragmentMeta, error) {
	if !validKind(kind) {
		return nil, errBadKind
	}
	name := bucketServer
	if kind == ProducerTime {
		name = bucketProd
	}
	lo, hi := timeToNanos(start), timeToNanos(end)
	seek := timeIndexKey(lo, 0)
	if cur := (timeKey{timeToNanos(after.Time), after.Number}); !cur.less(timeKey{lo, 0}) {
		seek = timeIndexKey(cur.nanos, cur.number)
	}
	var out []FragmentMeta
	err := s.view(stream, func(_ *fsStream, b *bolt.Bucket) error {
		c := b.Bucket(name).Cursor()
		k, v := c.Seek(seek)
		if k != nil && bytes.Equal(k, timeIndexKey(timeToNanos(after.Time), after.Number)) {
			k, v = c.Next() // strictly after the cursor
		}
		for ; k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			ts, number, ok := decodeTimeIndexKey(k)
			if !ok {
				return errBadEntry
			}
			if ts > hi {
				break
			}
			e, err := decodeIndexEntry(number, v)
			if err != nil {
				return err
			}
			out = append(out, e.meta())
		}
		return nil
	})
	return out, err
}

// First implements Store.
func (s *FS) First(_ context.Context, stream string) (FragmentMeta, error) {
	return s.end(stream, true)
}

// Last implements Store.
func (s *FS) Last(_ context.Context, stream string) (FragmentMeta, error) {
	return s.end(stream, false)
}

func (s *FS) end(stream string, first bool) (FragmentMeta, error) {
	var m FragmentMeta
	err := s.view(stream, func(_ *fsStream, b *bolt.Bucket) error {
		c := b.Bucket(bucketNumber).Cursor()
		k, v := c.Last()
		if first {
			k, v = c.First()
		}
		if k == nil {
			return fmt.Errorf("%w: %s is empty", ErrFragmentNotFound, stream)
		}
		e, err := decodeIndexEntry(getU64(k), v)
		m = e.meta()
		return err
	})
	return m, err
}

// AppendPayload implements Store: it reads the record straight into b's spare
// capacity (one copy from the page cache, no buffer of its own) and checks its CRC.
func (s *FS) AppendPayload(_ context.Context, stream string, number uint64, b []byte) ([]byte, FragmentMeta, error) {
	f, e, h, err := s.openRecord(stream, number)
	if err != nil {
		return b, FragmentMeta{}, err
	}
	defer f.Close()
	b, err = readPayload(f, e, h, b)
	if err != nil {
		return b, FragmentMeta{}, fmt.Errorf("read %s/%d: %w", stream, number, err)
	}
	return b, e.meta(), nil
}
