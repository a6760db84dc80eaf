package mkv

// EBML at the element level: the one decoder of element headers, and the decoders of values.

import (
	"bufio"
	"io"
	"math"
	"math/bits"
)

// maxHeaderLen is the longest element header the decoder accepts: a 4-byte ID and an 8-byte size.
const maxHeaderLen = 12

// markerLen returns the length in bytes of the EBML variable-size integer (or element ID) whose
// first byte is b: one more than its leading zero bits; 9 for 0x00, which starts none.
func markerLen(b byte) int { return bits.LeadingZeros8(b) + 1 }

// decodeHeader decodes the element header at the start of b: the ID (with its length marker, as
// the ID* constants), the data size (-1 when all its value bits are set: unknown) and n, the
// header's length. When b is too short it returns errShort with, in n, how many bytes it needs to
// go on, and in id the part of the ID that b holds. An ID longer than 4 bytes is errBadID and a
// size longer than 8 bytes errBadSize; n is then the bytes up to and including the bad one.
func decodeHeader(b []byte) (id uint32, size int64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, 1, errShort
	}
	idLen := markerLen(b[0])
	if idLen > 4 {
		return uint32(b[0]), 0, 1, errBadID
	}
	for _, c := range b[:min(idLen, len(b))] {
		id = id<<8 | uint32(c)
	}
	if len(b) <= idLen {
		return id, 0, idLen + 1, errShort
	}
	first := b[idLen]
	sizeLen := markerLen(first)
	if sizeLen > 8 {
		return id, 0, idLen + 1, errBadSize
	}
	n = idLen + sizeLen
	if len(b) < n {
		return id, 0, n, errShort
	}
	v := uint64(first & (0xFF >> sizeLen))
	unknown := v == 0xFF>>sizeLen
	for _, c := range b[idLen+1 : n] {
		v = v<<8 | uint64(c)
		unknown = unknown && c == 0xFF
	}
	if unknown {
		return id, -1, n, nil
	}
	return id, int64(v), n, nil
}

// DecodeElementHeader decodes the EBML element header at the start of b: the element ID (with its
// length marker, as the ID* constants), the data size in bytes (-1 for an unknown size) and n, the
// header's length. When b ends inside the header it returns io.ErrUnexpectedEOF; an ID longer
// than 4 bytes or a size longer than 8 bytes is an error.
func DecodeElementHeader(b []byte) (id uint32, size int64, n int, err error) {
	id, size, n, err = decodeHeader(b)
	if err == errShort { //nolint:errorlint // our own sentinel, never wrapped
		err = io.ErrUnexpectedEOF
	}
	return id, size, n, err
}

// ReadElementHeader reads one EBML element header from br: the element ID (with its length
// marker, as the ID* constants), the data size in bytes (-1 for an unknown size) and n, the bytes
// read. It reads no further than the header, so it does not wait for input beyond it. At the end
// of input before the header it returns io.EOF; when the input ends inside the header,
// io.ErrUnexpectedEOF; an ID longer than 4 bytes or a size longer than 8 bytes is an error. n
// counts the bytes consumed on error too, and id then holds what was read of the ID. For readers
// that walk a stream without parsing it (Reader parses it).
func ReadElementHeader(br *bufio.Reader) (id uint32, size int64, n int, err error) {
	return readElementHeader(br)
}

// peeker is what readElementHeader reads from: a bufio.Reader or the Reader's input.
type peeker interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
}

func readElementHeader[B peeker](br B) (id uint32, size int64, n int, err error) {
	b, _ := br.Peek(min(br.Buffered(), maxHeaderLen)) // never blocks
	for {
		id, size, n, err = decodeHeader(b)
		if err != errShort { //nolint:errorlint // our own sentinel, never wrapped
			_, _ = br.Discard(n)
			return id, size, n, err
		}
		var perr error
		if b, perr = br.Peek(n); len(b) < n {
			if len(b) == 0 {
				return 0, 0, 0, perr // io.EOF at a clean end
			}
			id, _, _, _ = decodeHeader(b)
			n, _ = br.Discard(len(b))
			return id, 0, n, unexpected(perr)
		}
	}
}

// parseHeader decodes an element header from the start of b and checks that the element's data
// lies within b. It returns the ID, data size and header length.
func parseHeader(b []byte) (id uint32, size int64, n int, err error) {
	id, size, n, err = decodeHeader(b)
	switch {
	case err == errShort: //nolint:errorlint // our own sentinel, never wrapped
		return id, 0, 0, io.ErrUnexpectedEOF
	case err != nil:
		return id, 0, 0, err
	case size < 0:
		return id, 0, 0, errUnknownSize
	case size > int64(len(b)-n):
		return id, 0, 0, errOverflow
	}
	return id, size, n, nil
}

// children calls fn for each child element in data.
func children(data []byte, fn func(id uint32, v []byte) error) error {
	for p := 0; p < len(data); {
		id, size, n, err := parseHeader(data[p:])
		if err != nil {
			return err
		}
		p += n
		if err := fn(id, data[p:p+int(size)]); err != nil {
			return err
		}
		p += int(size)
	}
	return nil
}

// readVint decodes an EBML variable-size integer (marker bit removed) from the start of b and
// returns its value and length; n <= 0 when b is empty, starts with 0x00 or is too short.
func readVint(b []byte) (v uint64, n int) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0
	}
	n = markerLen(b[0])
	if len(b) < n {
		return 0, 0
	}
	v = uint64(b[0] & (0xFF >> n))
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

func readUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// readInt decodes a big-endian two's-complement integer of at most 8 bytes (0 when empty).
func readInt(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	v := int64(int8(b[0]))
	for _, c := range b[1:] {
		v = v<<8 | int64(c)
	}
	return v
}

func parseUint(b []byte) (uint64, error) {
	if len(b) > 8 {
		return 0, errBadValue
	}
	return readUint(b), nil
}

func parseFloat(b []byte) (float64, error) {
	switch len(b) {
	case 0:
		return 0, nil
	case 4:
		return float64(math.Float32frombits(uint32(readUint(b)))), nil
	case 8:
		return math.Float64frombits(readUint(b)), nil
	}
	return 0, errBadValue
}

// parseString returns b up to its first NUL (EBML strings may be zero-padded).
func parseString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
