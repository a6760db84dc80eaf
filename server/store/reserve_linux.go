package store

import (
	"errors"
	"os"
	"syscall"
)

// reserve allocates n bytes of f on disk (fallocate, no data written), failing with ENOSPC where
// the filesystem has no room for them, as an append of that size would (root's reserved blocks
// counted, as for the append). A filesystem without fallocate (EOPNOTSUPP) is taken as having
// room: its probe write still shows a full disk at its last pages.
func reserve(f *os.File, n int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, n)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP):
			return nil
		case err != nil:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
		return nil
	}
}
