package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A segment file is a sequence of records, each a fixed header followed by the payload:
//
//	off len field
//	  0   4 magic "KVSR"
//	  4   4 payload length, bytes (<= MaxRecordSize)
//	  8   8 fragment number
//	 16   8 server time, Unix ns (math.MinInt64: zero time)
//	 24   8 producer time, Unix ns
//	 32   8 duration, ns
//	 40   4 CRC-32C (Castagnoli) of the payload
//	 44   4 CRC-32C of header bytes 0..44
//
// Integers are little-endian. The header carries the whole index entry, so a record that reached
// the disk but not the index can be re-indexed on recovery, and the index could be rebuilt from
// the segments alone. The header checksum lets recovery reject a torn or garbled header before
// trusting its length.
const (
	recordHeaderSize = 48
	recordMagic      = "KVSR"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordHeader is a decoded record header.
type recordHeader struct {
	Length       uint32
	Number       uint64
	ServerNanos  int64
	ProducerNano int64
	Duration     int64
	PayloadCRC   uint32
}

func newRecordHeader(meta FragmentMeta, data []byte) recordHeader {
	return recordHeader{
		Length:       uint32(len(data)),
		Number:       meta.Number,
		ServerNanos:  timeToNanos(meta.ServerTime),
		ProducerNano: timeToNanos(meta.ProducerTime),
		Duration:     int64(meta.Duration),
		PayloadCRC:   crc32.Checksum(data, castagnoli),
	}
}

func (h recordHeader) encode(b []byte) []byte {
	b = append(b, recordMagic...)
	b = binary.LittleEndian.AppendUint32(b, h.Length)
	b = binary.LittleEndian.AppendUint64(b, h.Number)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.ServerNanos))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.ProducerNano))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Duration))
	b = binary.LittleEndian.AppendUint32(b, h.PayloadCRC)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[len(b)-44:], castagnoli))
}

// Reasons a record is rejected; recovery reports them.
var (
	errTornHeader  = errors.New("torn record header")
	errBadMagic    = errors.New("bad record magic")
	errHeaderCRC   = errors.New("record header checksum mismatch")
	errBadLength   = errors.New("record length over the limit")
	errTornPayload = errors.New("torn record payload")
	errPayloadCRC  = errors.New("record payload checksum mismatch")
)

// decodeRecordHeader parses the first recordHeaderSize bytes of b.
func decodeRecordHeader(b []byte) (recordHeader, error) {
	if len(b) < recordHeaderSize {
		return recordHeader{}, errTornHeader
	}
	if !bytes.Equal(b[:4], []byte(recordMagic)) {
		return recordHeader{}, errBadMagic
	}
	if crc32.Checksum(b[:44], castagnoli) != binary.LittleEndian.Uint32(b[44:]) {
		return recordHeader{}, errHeaderCRC
	}
	h := recordHeader{
		Length:       binary.LittleEndian.Uint32(b[4:]),
		Number:       binary.LittleEndian.Uint64(b[8:]),
		ServerNanos:  int64(binary.LittleEndian.Uint64(b[16:])),
		ProducerNano: int64(binary.LittleEndian.Uint64(b[24:])),
		Duration:     int64(binary.LittleEndian.Uint64(b[32:])),
		PayloadCRC:   binary.LittleEndian.Uint32(b[40:]),
	}
	if h.Length > MaxRecordSize {
		return recordHeader{}, errBadLength
	}
	return h, nil
}

// readRecord reads and fully verifies the record at off in a segment of the given size, without
// holding more than a small buffer of the payload in memory. It returns the header and the
// record's total length (header + payload).
func readRecord(r io.ReaderAt, off, size int64) (recordHeader, int64, error) {
	var hb [recordHeaderSize]byte
	if size-off < recordHeaderSize {
		return recordHeader{}, 0, errTornHeader
	}
	if _, err := r.ReadAt(hb[:], off); err != nil {
		return recordHeader{}, 0, fmt.Errorf("read record header: %w", err)
	}
	h, err := decodeRecordHeader(hb[:])
	if err != nil {
		return recordHeader{}, 0, err
	}
	n := recordHeaderSize + int64(h.Length)
	if size-off < n {
		return recordHeader{}, 0, errTornPayload
	}
	crc := crc32.New(castagnoli)
	if _, err := io.Copy(crc, io.NewSectionReader(r, off+recordHeaderSize, int64(h.Length))); err != nil {
		return recordHeader{}, 0, fmt.Errorf("read record payload: %w", err)
	}
	if crc.Sum32() != h.PayloadCRC {
		return recordHeader{}, 0, errPayloadCRC
	}
	return h, n, nil
}

// isRecordDamage tells a damaged record (cut it) from an I/O error (stop, do not touch the file).
func isRecordDamage(err error) bool {
	for _, e := range []error{errTornHeader, errBadMagic, errHeaderCRC, errBadLength, errTornPayload, errPayloadCRC} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
