package client

import (
	"errors"
	"math"
	"os"

	"golang.org/x/sys/windows"
)

// lockSpool takes an exclusive lock on the spool's lock file (LockFileEx), so that two processes
// never send (and remove) the same fragments; the lock goes with the handle, and so with the
// process. Without it (the lock was Unix only) a second put-media or agent on the same spool
// directory ran alongside the first. Windows locks are mandatory: the byte locked is far past
// the PID the file holds, so that another process can still read who holds it.
func lockSpool(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	ol := &windows.Overlapped{Offset: math.MaxUint32, OffsetHigh: math.MaxInt32}
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, spoolInUse(path)
		}
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	writeSpoolHolder(f)
	return f, nil
}
