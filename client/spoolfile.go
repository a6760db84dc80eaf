package client

// The spool's segment files: their record format, and the scan that finds the whole records in
// one (and where a torn one starts).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/record"
)

// A spool segment file is a sequence of records, each a fixed header followed by the stream
// header and the fragment:
//
//	off len field
//	  0   4 magic "KVSQ"
//	  4   4 stream header length H, bytes (<= maxSpoolStreamHeader)
//	  8   4 fragment length B, bytes (<= maxSpoolFragment)
//	 12   8 sequence number (increasing across the spool, never reused)
//	 20   8 cluster timecode, ticks
//	 28   8 timecode scale, ns per tick
//	 36   4 CRC-32C (Castagnoli) of the H + B bytes that follow
//	 40   4 CRC-32C of header bytes 0..40
//	 44   H stream header: EBML header, Segment start, Info and Tracks, as a PutMedia body starts
//	44+H  B fragment: producer Tags (optional) and the Cluster
//
// Integers are little-endian. Each record is whole in itself (a fragment's tracks travel with
// it), so that any suffix of the spool can be sent after a restart. The framing (magic, header
// checksum, payload checksum) is internal/record's, as in the server's segment files.
const (
	spoolRecordHeaderSize = 44
	spoolMagic            = "KVSQ"
	maxSpoolStreamHeader  = 1 << 20
	// maxSpoolFragment is above KVS's 50 MB fragment limit plus producer tags.
	maxSpoolFragment = 64 << 20
)

// spoolRecordHeader is a decoded record header.
type spoolRecordHeader struct {
	HeaderLen, BodyLen uint32
	Seq                uint64
	Timecode           int64
	Scale              uint64
	PayloadCRC         uint32
}

// size is the record's total length on disk.
func (h spoolRecordHeader) size() int64 {
	return spoolRecordHeaderSize + int64(h.HeaderLen) + int64(h.BodyLen)
}

func (h spoolRecordHeader) encode(b []byte) []byte {
	start := len(b)
	b = append(b, spoolMagic...)
	b = binary.LittleEndian.AppendUint32(b, h.HeaderLen)
	b = binary.LittleEndian.AppendUint32(b, h.BodyLen)
	b = binary.LittleEndian.AppendUint64(b, h.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Timecode)) //nolint:gosec // two's complement on disk
	b = binary.LittleEndian.AppendUint64(b, h.Scale)
	b = binary.LittleEndian.AppendUint32(b, h.PayloadCRC)
	return record.Seal(b, start)
}

// castagnoli is the table of the spool's checksums.
var castagnoli = record.Castagnoli

// decodeSpoolRecordHeader parses the first spoolRecordHeaderSize bytes of b.
func decodeSpoolRecordHeader(b []byte) (spoolRecordHeader, error) {
	if err := record.CheckHeader(b, spoolMagic, spoolRecordHeaderSize); err != nil {
		return spoolRecordHeader{}, err
	}
	h := spoolRecordHeader{
		HeaderLen:  binary.LittleEndian.Uint32(b[4:]),
		BodyLen:    binary.LittleEndian.Uint32(b[8:]),
		Seq:        binary.LittleEndian.Uint64(b[12:]),
		Timecode:   int64(binary.LittleEndian.Uint64(b[20:])), //nolint:gosec // two's complement on disk
		Scale:      binary.LittleEndian.Uint64(b[28:]),
		PayloadCRC: binary.LittleEndian.Uint32(b[36:]),
	}
	if h.HeaderLen == 0 || h.HeaderLen > maxSpoolStreamHeader || h.BodyLen == 0 || h.BodyLen > maxSpoolFragment || h.Scale == 0 {
		return spoolRecordHeader{}, record.ErrBadLength
	}
	return h, nil
}

// spoolRecord is one fragment read back from the spool.
type spoolRecord struct {
	spoolRecordHeader
	// Header is the stream header, Body the fragment (from internal/bufpool: the caller owns it
	// and puts it back).
	Header, Body []byte
}

// readSpoolRecord reads and verifies the record at off of a segment of the given size. With
// payload false only the header is read and checked (Header and Body are nil). It returns the
// record and its length on disk; the length and the header are known (n non-zero) even when the
// payload is damaged (record.ErrPayloadCRC), as long as the header is whole.
func readSpoolRecord(r io.ReaderAt, off, size int64, payload bool) (spoolRecord, int64, error) {
	var hb [spoolRecordHeaderSize]byte
	h, n, err := record.ReadHeader(r, off, size, hb[:], func(b []byte) (spoolRecordHeader, int64, error) {
		h, err := decodeSpoolRecordHeader(b)
		return h, h.size() - spoolRecordHeaderSize, err
	})
	if err != nil {
		return spoolRecord{}, 0, err
	}
	rec := spoolRecord{spoolRecordHeader: h}
	if !payload {
		return rec, n, nil
	}
	// The payload is read only once the header said it fits in the file: a garbled length never
	// makes this allocate more than the file holds.
	buf := bufpool.Get(int(h.HeaderLen) + int(h.BodyLen))[:int(h.HeaderLen)+int(h.BodyLen)]
	if _, err := r.ReadAt(buf, off+spoolRecordHeaderSize); err != nil {
		bufpool.Put(buf)
		return spoolRecord{}, n, fmt.Errorf("read record payload: %w", err)
	}
	if crc32.Checksum(buf, castagnoli) != h.PayloadCRC {
		// The header is whole (its checksum held): rec says which record is damaged, and n
		// where the next one starts.
		bufpool.Put(buf)
		return rec, n, record.ErrPayloadCRC
	}
	// The stream header is small: copy it out, so that Body alone owns the pooled buffer.
	rec.Header = append([]byte(nil), buf[:h.HeaderLen]...)
	rec.Body = append(buf[:0], buf[h.HeaderLen:]...)
	return rec, n, nil
}

// segmentScan is what a scan of a segment file found: its whole records, and where the first
// damaged one starts.
type segmentScan struct {
	First, Last uint64 // sequence numbers of the first and last whole record (0 when none)
	Count       int
	// Damaged counts the records (among Count) whose payload is damaged though records follow
	// them: a damaged disk, not a crash, which can only tear the last record.
	Damaged int
	End     int64 // offset after the last whole record
	Cut     error // why the scan stopped before the end of the file; nil when it did not
	// Oldest and Newest are the producer timestamps of the first and last whole record numbered
	// above the scan's acked (zero when none).
	Oldest, Newest time.Time
}

// scanSegment walks the records of a segment of the given size from its start. Each header is
// checked, and each payload too when verify is set (only the segment written last can have a torn
// record: the ones before it were synced whole before the next was started, so their payloads are
// checked when they are read to be sent). Sequence numbers must increase and be above after. The
// scan stops at the first damaged record (Cut says why) or at an I/O error (returned), except at
// a record whose payload alone is damaged while records follow it (Damaged): that is no torn
// tail, and the records after it are kept. Memory use is constant.
func scanSegment(r io.ReaderAt, size int64, verify bool, after, acked uint64) (segmentScan, error) {
	var s segmentScan
	prev := after
	for s.End < size {
		rec, n, err := readSpoolRecord(r, s.End, size, verify)
		damaged := errors.Is(err, record.ErrPayloadCRC) && s.End+n < size
		if damaged {
			err = nil // framed by its whole header: the records after it are kept
			s.Damaged++
		}
		if err == nil && rec.Seq <= prev {
			err = fmt.Errorf("%w: %d after %d", record.ErrSequence, rec.Seq, prev)
		}
		if err != nil {
			if !record.IsDamage(err) {
				return s, err
			}
			s.Cut = err
			return s, nil
		}
		bufpool.Put(rec.Body)
		if s.Count == 0 {
			s.First = rec.Seq
		}
		s.Last, prev = rec.Seq, rec.Seq
		s.Count++
		if rec.Seq > acked && !damaged {
			at := time.Unix(0, rec.Timecode*int64(rec.Scale)) //nolint:gosec // a producer timestamp in ns
			if s.Oldest.IsZero() {
				s.Oldest = at
			}
			s.Newest = at
		}
		s.End += n
	}
	return s, nil
}
