package mkv

import (
	"errors"
	"fmt"
	"io"
)

// ErrElementTooLarge reports an element (or, from FragmentReader, a fragment) larger than the
// configured cap. It is returned, wrapped in a *SyntaxError, before anything is allocated for it.
var ErrElementTooLarge = errors.New("element too large")

// Errors wrapped in *SyntaxError for malformed input.
var (
	errBadID           = errors.New("invalid element ID")
	errBadSize         = errors.New("invalid element size")
	errUnknownSize     = errors.New("unknown size not allowed for this element")
	errOverflow        = errors.New("element overflows its parent")
	errUnexpected      = errors.New("element not allowed here")
	errBadBlock        = errors.New("malformed block")
	errBadLacing       = errors.New("malformed lacing")
	errBadValue        = errors.New("malformed value")
	errTooDeep         = errors.New("tags nested too deep")
	errTimecodeRange   = errors.New("timecode out of range")
	errContentEncoding = errors.New("a track's frames are compressed or encrypted (ContentEncodings), which kvs does not take: remux the file without, e.g. mkvmerge -o out.mkv --compression -1:none IN")

	// errShort is decodeHeader's "more bytes needed"; it never leaves the package.
	errShort = errors.New("element header cut short")
)

// SyntaxError reports malformed input at a byte offset; Err is the underlying cause
// (io.ErrUnexpectedEOF for truncation, ErrElementTooLarge for an over-size element).
type SyntaxError struct {
	Offset int64  // byte offset of the offending element's ID in the input
	ID     uint32 // the element's ID; 0 when the ID itself could not be read
	Err    error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("mkv: offset %d, element %#x: %v", e.Offset, e.ID, e.Err)
}

// Unwrap returns the underlying cause.
func (e *SyntaxError) Unwrap() error { return e.Err }

// unexpected turns io.EOF in the middle of something into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF { //nolint:errorlint // io.Reader contract
		return io.ErrUnexpectedEOF
	}
	return err
}
