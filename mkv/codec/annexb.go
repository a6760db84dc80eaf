package codec

import (
	"encoding/binary"
	"fmt"
)

// nextStartCode returns the index of the next 00 00 01 at or after i and the index of the byte after
// it, or (-1, -1). A preceding zero (the 4-byte form) is left to the caller to trim.
func nextStartCode(b []byte, i int) (at, after int) {
	for ; i+2 < len(b); i++ {
		if b[i+2] > 1 {
			i += 2 // b[i+2] can be neither the 0 nor the 1 of a start code: skip ahead
			continue
		}
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			return i, i + 3
		}
	}
	return -1, -1
}

// trimZeros drops trailing zero bytes: the leading zero of a 4-byte start code, and the
// trailing_zero_8bits an Annex B byte stream may carry after a NAL unit. No NAL unit ends in zero.
func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// annexBIter yields the NAL units of Annex B data without allocating.
type annexBIter struct {
	b     []byte
	start int // start of the next NAL unit; -1 when done
	found bool
}

func newAnnexBIter(b []byte) (annexBIter, error) {
	i := 0
	for i < len(b) && b[i] == 0 {
		i++
	}
	if i < 2 || i >= len(b) || b[i] != 1 {
		return annexBIter{start: -1}, ErrNoStartCode
	}
	return annexBIter{b: b, start: i + 1}, nil
}

// next returns the next non-empty NAL unit, or nil at the end.
func (it *annexBIter) next() []byte {
	for it.start >= 0 {
		at, after := nextStartCode(it.b, it.start)
		end := at
		if at < 0 {
			end = len(it.b)
		}
		nalu := trimZeros(it.b[it.start:end])
		it.start = after
		if len(nalu) > 0 {
			it.found = true
			return nalu
		}
	}
	return nil
}

// WalkAnnexB calls fn with each NAL unit (without start code) of the Annex B data b, in order,
// stopping at the first error fn returns. The NAL units are sub-slices of b. b may start with any
// number of zero bytes before its first start code; anything else there is ErrNoStartCode. Empty NAL
// units (two start codes in a row) are skipped; no NAL units at all is ErrNoNALUs.
func WalkAnnexB(b []byte, fn func(nalu []byte) error) error {
	it, err := newAnnexBIter(b)
	if err != nil {
		return err
	}
	for n := it.next(); n != nil; n = it.next() {
		if err := fn(n); err != nil {
			return err
		}
	}
	if !it.found {
		return ErrNoNALUs
	}
	return nil
}

// SplitAnnexB appends the NAL units of the Annex B data b to dst and returns it. The NAL units are
// sub-slices of b (no start codes). Pass dst[:0] of a reused slice to avoid allocating.
func SplitAnnexB(dst [][]byte, b []byte) ([][]byte, error) {
	it, err := newAnnexBIter(b)
	if err != nil {
		return dst, err
	}
	for n := it.next(); n != nil; n = it.next() {
		dst = append(dst, n)
	}
	if !it.found {
		return dst, ErrNoNALUs
	}
	return dst, nil
}

// AppendAVCC appends the Annex B data annexB to dst as 4-byte length-prefixed NAL units (the AVCC
// form Matroska and MP4 store) and returns the extended slice. It allocates only when dst lacks
// capacity; dst and annexB must not overlap. On error dst is returned unchanged in length.
func AppendAVCC(dst, annexB []byte) ([]byte, error) {
	it, err := newAnnexBIter(annexB)
	if err != nil {
		return dst, err
	}
	n := len(dst)
	for nalu := it.next(); nalu != nil; nalu = it.next() {
		if uint64(len(nalu)) > 0xFFFFFFFF {
			return dst[:n], fmt.Errorf("NAL unit of %d bytes does not fit a 4-byte length", len(nalu))
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(nalu)))
		dst = append(dst, nalu...)
	}
	if !it.found {
		return dst, ErrNoNALUs
	}
	return dst, nil
}

// avccIter yields the NAL units of length-prefixed data without allocating.
type avccIter struct {
	b          []byte
	lengthSize int
	found      bool
	err        error
}

func newAVCCIter(b []byte, lengthSize int) avccIter {
	it := avccIter{b: b, lengthSize: lengthSize}
	if lengthSize != 1 && lengthSize != 2 && lengthSize != 4 {
		it.err = fmt.Errorf("NAL unit length size %d: must be 1, 2 or 4", lengthSize)
	}
	return it
}

// next returns the next non-empty NAL unit, or nil at the end or on error (then it.err is set;
// no NAL unit at all is ErrNoNALUs).
func (it *avccIter) next() []byte {
	for it.err == nil {
		if len(it.b) == 0 {
			if !it.found {
				it.err = ErrNoNALUs
			}
			return nil
		}
		if len(it.b) < it.lengthSize {
			it.err = fmt.Errorf("%w: %d bytes left, length field needs %d", ErrBadLength, len(it.b), it.lengthSize)
			return nil
		}
		var l uint64
		for _, c := range it.b[:it.lengthSize] {
			l = l<<8 | uint64(c)
		}
		it.b = it.b[it.lengthSize:]
		if l > uint64(len(it.b)) {
			it.err = fmt.Errorf("%w: length %d, %d bytes left", ErrBadLength, l, len(it.b))
			return nil
		}
		nalu := it.b[:l:l]
		it.b = it.b[l:]
		if l > 0 {
			it.found = true
			return nalu
		}
	}
	return nil
}

// WalkAVCC calls fn with each NAL unit of the length-prefixed data b, where each NAL unit is
// preceded by its length in lengthSize (1, 2 or 4) big-endian bytes, stopping at the first error fn
// returns. Zero-length NAL units are skipped; none at all is ErrNoNALUs. The NAL units are
// sub-slices of b.
func WalkAVCC(b []byte, lengthSize int, fn func(nalu []byte) error) error {
	it := newAVCCIter(b, lengthSize)
	for n := it.next(); n != nil; n = it.next() {
		if err := fn(n); err != nil {
			return err
		}
	}
	return it.err
}

// SplitAVCC appends the NAL units of the 4-byte length-prefixed data b to dst and returns it. The
// NAL units are sub-slices of b.
func SplitAVCC(dst [][]byte, b []byte) ([][]byte, error) {
	it := newAVCCIter(b, 4)
	for n := it.next(); n != nil; n = it.next() {
		dst = append(dst, n)
	}
	return dst, it.err
}

// AppendAnnexB appends the 4-byte length-prefixed data avcc to dst in Annex B form, each NAL unit
// preceded by a 00 00 00 01 start code, and returns the extended slice. It allocates only when dst
// lacks capacity; dst and avcc must not overlap. On error dst is returned unchanged in length.
func AppendAnnexB(dst, avcc []byte) ([]byte, error) {
	n := len(dst)
	it := newAVCCIter(avcc, 4)
	for nalu := it.next(); nalu != nil; nalu = it.next() {
		dst = append(dst, 0, 0, 0, 1)
		dst = append(dst, nalu...)
	}
	if it.err != nil {
		return dst[:n], it.err
	}
	return dst, nil
}

// AppendLengthPrefixed appends each NAL unit of nalus to dst with a 4-byte big-endian length and
// returns the extended slice.
func AppendLengthPrefixed(dst []byte, nalus ...[]byte) []byte {
	for _, n := range nalus {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(n)))
		dst = append(dst, n...)
	}
	return dst
}

// ConvertLengthSize appends the NAL units of b, length-prefixed with lengthSize bytes, to dst with
// 4-byte lengths. It turns the rare 1- and 2-byte avcC/hvcC forms into the 4-byte form kvs writes.
// On error dst is returned unchanged in length.
func ConvertLengthSize(dst, b []byte, lengthSize int) ([]byte, error) {
	n := len(dst)
	it := newAVCCIter(b, lengthSize)
	for nalu := it.next(); nalu != nil; nalu = it.next() {
		dst = AppendLengthPrefixed(dst, nalu)
	}
	if it.err != nil {
		return dst[:n], it.err
	}
	return dst, nil
}
