package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/openkvs/kvs/internal/record"
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
		PayloadCRC:   Checksum(meta, data),
	}
}

// Checksum is meta's Checksum (the server computes it while the frames are in the CPU cache),
// or the CRC-32C of data when the caller gave none: what a store keeps as the data's checksum.
func Checksum(meta FragmentMeta, data []byte) uint32 {
	if meta.Checksum != 0 {
		return meta.Checksum
	}
	return crc32.Checksum(data, record.Castagnoli)
}

func (h recordHeader) encode(b []byte) []byte {
	start := len(b)
	b = append(b, recordMagic...)
	b = binary.LittleEndian.AppendUint32(b, h.Length)
	b = binary.LittleEndian.AppendUint64(b, h.Number)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.ServerNanos))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.ProducerNano))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Duration))
	b = binary.LittleEndian.AppendUint32(b, h.PayloadCRC)
	return record.Seal(b, start)
}

// decodeRecordHeader parses the first recordHeaderSize bytes of b.
func decodeRecordHeader(b []byte) (recordHeader, error) {
	if err := record.CheckHeader(b, recordMagic, recordHeaderSize); err != nil {
		return recordHeader{}, err
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
		return recordHeader{}, record.ErrBadLength
	}
	return h, nil
}

// readRecord reads and fully verifies the record at off in a segment of the given size, without
// holding more than a small buffer of the payload in memory. It returns the header and the
// record's total length (header + payload).
func readRecord(r io.ReaderAt, off, size int64) (recordHeader, int64, error) {
	var hb [recordHeaderSize]byte
	h, n, err := record.ReadHeader(r, off, size, hb[:], func(b []byte) (recordHeader, int64, error) {
		h, err := decodeRecordHeader(b)
		return h, int64(h.Length), err
	})
	if err != nil {
		return recordHeader{}, 0, err
	}
	crc := crc32.New(record.Castagnoli)
	if _, err := io.Copy(crc, io.NewSectionReader(r, off+recordHeaderSize, int64(h.Length))); err != nil {
		return recordHeader{}, 0, fmt.Errorf("read record payload: %w", err)
	}
	if crc.Sum32() != h.PayloadCRC {
		return recordHeader{}, 0, record.ErrPayloadCRC
	}
	return h, n, nil
}
