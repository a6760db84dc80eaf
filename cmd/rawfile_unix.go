//go:build unix

package cmd

import (
	"os"
	"syscall"
)

// mapRegion maps n bytes of f from off, read-only, and returns them with the function that
// unmaps them: an answer just written is checked in the page cache, not copied out again.
func mapRegion(f *os.File, off, n int64) ([]byte, func(), error) {
	if n == 0 {
		return nil, func() {}, nil
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	m, err := syscall.Mmap(int(f.Fd()), start, int(off-start+n), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	return m[off-start:], func() { _ = syscall.Munmap(m) }, nil
}
