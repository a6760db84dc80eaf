//go:build linux

package fsync

import (
	"errors"
	"os"
	"syscall"
)

// Data flushes f's data and the metadata needed to read it back (its size), which is all an
// append-only file needs; it skips the timestamp updates a full fsync also writes.
func Data(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
