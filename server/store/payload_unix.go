//go:build unix

package store

import (
	"fmt"
	"hash/crc32"
	"os"
	"syscall"

	"github.com/openkvs/kvs/internal/mapped"
	"github.com/openkvs/kvs/internal/record"
)

// mapWindow is how much of a payload checksumFile maps at a time.
const mapWindow = 16 << 20

// checksumFile returns the CRC-32C of n bytes of f from off, computed over a read-only mapping
// of the file: the bytes are read where they lie in the page cache, not copied out first, so a
// payload checked before it is sent with sendfile(2) passes through user space not at all. A page
// that cannot be read (an I/O error while faulting it in: SIGBUS) is an error, not a crash.
func checksumFile(f *os.File, off, n int64) (sum uint32, err error) {
	page := int64(os.Getpagesize())
	for n > 0 {
		start := off &^ (page - 1)
		length := min(n+off-start, mapWindow)
		m, err := syscall.Mmap(int(f.Fd()), start, int(length), syscall.PROT_READ, syscall.MAP_SHARED|mapPopulate)
		if err != nil {
			return 0, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
		}
		sum, err = updateMapped(sum, m[off-start:])
		if uerr := syscall.Munmap(m); err == nil && uerr != nil {
			err = uerr
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f.Name(), err)
		}
		n -= length - (off - start)
		off = start + length
	}
	return sum, nil
}

// updateMapped adds b, mapped file pages, to the CRC-32C sum.
func updateMapped(sum uint32, b []byte) (uint32, error) {
	err := mapped.Read(func() { sum = crc32.Update(sum, record.Castagnoli, b) })
	return sum, err
}
