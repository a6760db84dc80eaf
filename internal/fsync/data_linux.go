//go:build linux

package fsync

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
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

// Drop asks the kernel to drop the page cache of the file at path from off for n bytes, which
// must be on disk (after Data): POSIX_FADV_DONTNEED. It is advice: the data stays readable.
func Drop(path string, off, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	if err := rc.Control(func(fd uintptr) {
		// unix.Fadvise: the syscall's number and argument layout differ by architecture
		// (fadvise64_64 with split offsets on 386, arm_fadvise64_64 on arm).
		aerr = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
	}); err != nil {
		return err
	}
	if aerr != nil {
		return &os.PathError{Op: "fadvise", Path: path, Err: aerr}
	}
	return nil
}
