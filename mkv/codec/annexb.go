package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// AnnexBScanner splits an Annex B byte stream (H.264 or H.265 NAL units, each after a 00 00 01 or
// 00 00 00 01 start code) into its NAL units, reading the stream in pieces: one NAL unit at a time
// is held, never the whole stream. It is the one Annex B splitter of kvs: WalkAnnexB and AppendAVCC
// run it over a byte slice, capture over a file or standard input. Not safe for concurrent use.
type AnnexBScanner struct {
	r       io.Reader // nil: buf is the whole input
	maxNALU int
	buf     []byte // input read and not yet consumed; buf[start:] is the current NAL unit onwards
	start   int    // start of the current NAL unit in buf; -1 before the first start code
	scan    int    // where to look for the next start code
	eof     bool
	err     error
	found   bool // a NAL unit was returned
}

// NewAnnexBScanner returns a scanner of r. A NAL unit longer than maxNALU bytes is an error: the
// input is most likely not Annex B.
func NewAnnexBScanner(r io.Reader, maxNALU int) *AnnexBScanner {
	return &AnnexBScanner{r: r, maxNALU: maxNALU, start: -1}
}

// scanBytes returns a scanner of b, which holds the whole input.
func scanBytes(b []byte) AnnexBScanner { return AnnexBScanner{buf: b, start: -1, eof: true} }

// Next returns the next non-empty NAL unit, without its start code and without the zero bytes
// that may trail it, or io.EOF after the last one. The NAL unit is valid until the next call. The
// input may start with any number of zero bytes before its first start code; anything else there
// is ErrNoStartCode. Empty NAL units (two start codes in a row) are skipped. Errors, the reader's
// included, are sticky.
func (s *AnnexBScanner) Next() ([]byte, error) {
	for s.err == nil {
		if s.start < 0 {
			// Before the first start code only zero bytes are allowed.
			i := 0
			for i < len(s.buf) && s.buf[i] == 0 {
				i++
			}
			switch {
			case i < len(s.buf) && s.buf[i] == 1 && i >= 2:
				s.start, s.scan = i+1, i+1
				continue
			case i < len(s.buf):
				s.err = ErrNoStartCode
				continue
			case s.eof:
				return nil, io.EOF
			}
			s.fill()
			continue
		}
		at := bytes.Index(s.buf[s.scan:], []byte{0, 0, 1})
		if at >= 0 {
			at += s.scan
			nalu := trimZeros(s.buf[s.start:at])
			s.start, s.scan = at+3, at+3
			if len(nalu) > 0 {
				s.found = true
				return nalu, nil
			}
			continue
		}
		if s.eof {
			nalu := trimZeros(s.buf[s.start:])
			s.start, s.scan = len(s.buf), len(s.buf)
			if len(nalu) > 0 {
				s.found = true
				return nalu, nil
			}
			return nil, io.EOF
		}
		s.scan = max(s.start, len(s.buf)-2)
		s.fill()
	}
	return nil, s.err
}

// fill reads more input into buf, first moving out what was consumed.
func (s *AnnexBScanner) fill() {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:])
		s.scan -= s.start
		s.buf = s.buf[:n]
		s.start = 0
	}
	if len(s.buf) > s.maxNALU+4 {
		s.err = fmt.Errorf("a NAL unit longer than %d bytes; the input is not an H.264/H.265 byte stream", s.maxNALU)
		return
	}
	if cap(s.buf)-len(s.buf) < 32<<10 {
		s.buf = append(make([]byte, 0, 2*cap(s.buf)+64<<10), s.buf...)
	}
	n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
	s.buf = s.buf[:len(s.buf)+n]
	if errors.Is(err, io.EOF) {
		s.eof = true
	} else if err != nil {
		s.err = err
	}
}

// end returns what a whole-input walk ends with: ErrNoStartCode when the input had no start code,
// ErrNoNALUs when it had no NAL unit, else nil.
func (s *AnnexBScanner) end() error {
	switch {
	case s.start < 0:
		return ErrNoStartCode
	case !s.found:
		return ErrNoNALUs
	}
	return nil
}

// trimZeros drops trailing zero bytes: the leading zero of a 4-byte start code, and the
// trailing_zero_8bits an Annex B byte stream may carry after a NAL unit. No NAL unit ends in zero.
func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// WalkAnnexB calls fn with each NAL unit (without start code) of the Annex B data b, in order,
// stopping at the first error fn returns. The NAL units are sub-slices of b. b may start with any
// number of zero bytes before its first start code; anything else there is ErrNoStartCode. Empty NAL
// units (two start codes in a row) are skipped; no NAL units at all is ErrNoNALUs.
func WalkAnnexB(b []byte, fn func(nalu []byte) error) error {
	s := scanBytes(b)
	for {
		n, err := s.Next()
		if err == io.EOF { //nolint:errorlint // Next returns io.EOF itself
			return s.end()
		}
		if err != nil {
			return err
		}
		if err := fn(n); err != nil {
			return err
		}
	}
}

// AppendAVCC appends the Annex B data annexB to dst as 4-byte length-prefixed NAL units (the AVCC
// form Matroska and MP4 store) and returns the extended slice. It allocates only when dst lacks
// capacity; dst and annexB must not overlap. On error dst is returned unchanged in length.
func AppendAVCC(dst, annexB []byte) ([]byte, error) {
	n := len(dst)
	err := WalkAnnexB(annexB, func(nalu []byte) error {
		if uint64(len(nalu)) > 0xFFFFFFFF {
			return fmt.Errorf("NAL unit of %d bytes does not fit a 4-byte length", len(nalu))
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(nalu)))
		dst = append(dst, nalu...)
		return nil
	})
	if err != nil {
		return dst[:n], err
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
