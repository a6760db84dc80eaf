//go:build !linux

package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// reserve reports whether the filesystem of f has n bytes available (statfs; systems without it
// are taken as having room: the probe write still shows a full disk at its last pages).
func reserve(f *os.File, n int64) error {
	_, avail, err := filesystemUsage(filepath.Dir(f.Name()))
	if err != nil || avail >= n {
		return nil
	}
	return &os.PathError{Op: "reserve", Path: f.Name(), Err: fmt.Errorf("%w: %d bytes available, want %d", syscall.ENOSPC, avail, n)}
}
