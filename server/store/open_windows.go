package store

import (
	"os"
	"path/filepath"
	"syscall"
)

// openSegment opens a segment file as os.OpenFile(path, flag, 0o600) does for the flags the store
// uses (os.O_RDONLY; os.O_RDWR, with os.O_CREATE|os.O_EXCL for a new one), but shared for
// deletion (FILE_SHARE_DELETE), which os.OpenFile does not offer on Windows. Without it a
// segment could not be removed while any handle to it was open: retention and the byte caps
// failed on a segment a GetMedia or GetClip was reading (its entries gone from the index, the file
// left on disk until a restart), and DeleteStream on the segment being appended to. Shared, the
// removal succeeds and the open handles keep reading it, as on Unix.
func openSegment(path string, flag int) (*os.File, error) {
	p, err := syscall.UTF16PtrFromString(longPath(path))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	access := uint32(syscall.GENERIC_READ)
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		access |= syscall.GENERIC_WRITE
	}
	disposition := uint32(syscall.OPEN_EXISTING)
	if flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL {
		disposition = syscall.CREATE_NEW
	}
	share := uint32(syscall.FILE_SHARE_READ | syscall.FILE_SHARE_WRITE | syscall.FILE_SHARE_DELETE)
	h, err := syscall.CreateFile(p, access, share, nil, disposition, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// longPath returns path in its \\?\ form when it is an absolute drive path that may be too long
// for the Win32 MAX_PATH limit (os.OpenFile does as much; CreateFile here does not).
func longPath(path string) string {
	if len(path) < 248 || path[1] != ':' || !os.IsPathSeparator(path[2]) {
		return path
	}
	return `\\?\` + filepath.Clean(path)
}
