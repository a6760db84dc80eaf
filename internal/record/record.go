// Package record frames the checksummed records of kvs's append-only files: the segment files of
// the server's FS store (server/store) and the client's spool (client). A record is a fixed-size
// header, which starts with a 4-byte magic and ends with the CRC-32C (Castagnoli) of the bytes
// before it, followed by a payload whose CRC-32C the header carries. Each file format lays out
// its own header fields; this package checks the framing, so that a scan after a crash rejects a
// torn or garbled header before trusting the lengths in it. It imports only the standard library.
package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Castagnoli is the CRC-32C table of every record checksum.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Reasons a record is rejected: damage, which recovery cuts and reports (see IsDamage). Match
// them with errors.Is.
var (
	ErrTornHeader  = errors.New("torn record header")
	ErrBadMagic    = errors.New("bad record magic")
	ErrHeaderCRC   = errors.New("record header checksum mismatch")
	ErrBadLength   = errors.New("record length over the limit")
	ErrTornPayload = errors.New("torn record payload")
	ErrPayloadCRC  = errors.New("record payload checksum mismatch")
	ErrSequence    = errors.New("record sequence number out of order")
)

// IsDamage tells a damaged record (cut the file there) from an I/O error (stop, do not touch the
// file).
func IsDamage(err error) bool {
	for _, e := range []error{ErrTornHeader, ErrBadMagic, ErrHeaderCRC, ErrBadLength, ErrTornPayload, ErrPayloadCRC, ErrSequence} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Seal ends the header that starts at b[start:] with its checksum: the CRC-32C of b[start:].
func Seal(b []byte, start int) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], Castagnoli))
}

// CheckHeader verifies the framing of a header of size bytes at the start of b: that b holds it
// whole, that it starts with magic, and that its last 4 bytes are the checksum of the others.
func CheckHeader(b []byte, magic string, size int) error {
	switch {
	case len(b) < size:
		return ErrTornHeader
	case !bytes.Equal(b[:len(magic)], []byte(magic)):
		return ErrBadMagic
	case crc32.Checksum(b[:size-4], Castagnoli) != binary.LittleEndian.Uint32(b[size-4:]):
		return ErrHeaderCRC
	}
	return nil
}

// ReadHeader reads the header of the record at off in a file of fileSize bytes into hb (the
// header's size), decodes it with decode, which returns the header and the payload's length, and
// checks that the payload fits in the file. It returns the header and the record's length on disk
// (header and payload): ErrTornHeader or ErrTornPayload for a record the file ends inside, the
// decoder's error for a damaged header, an I/O error as it is.
func ReadHeader[H any](r io.ReaderAt, off, fileSize int64, hb []byte, decode func([]byte) (H, int64, error)) (H, int64, error) {
	var zero H
	if fileSize-off < int64(len(hb)) {
		return zero, 0, ErrTornHeader
	}
	if _, err := r.ReadAt(hb, off); err != nil {
		return zero, 0, fmt.Errorf("read record header: %w", err)
	}
	h, payload, err := decode(hb)
	if err != nil {
		return zero, 0, err
	}
	n := int64(len(hb)) + payload
	if fileSize-off < n {
		return zero, 0, ErrTornPayload
	}
	return h, n, nil
}
