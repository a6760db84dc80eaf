//go:build unix && !solaris && !aix

package client

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// lockSpool takes an exclusive lock on the spool's lock file, so that two processes never send
// (and remove) the same fragments; the lock goes with the process. The file holds the PID of the
// holder, for the message another process gets.
func lockSpool(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(ownLockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) //nolint:gosec // a file descriptor fits an int
		if err == nil {
			break
		}
		if errors.Is(err, syscall.EWOULDBLOCK) && heldByUs(path) && time.Now().Before(deadline) {
			// A lock this process let go of (a Spool closed and opened again) stays held for
			// a moment by a child process forked meanwhile (exec of ffmpeg, a camera helper):
			// the child shares the lock's open file until its exec closes it.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, spoolInUse(path)
		}
		return nil, err
	}
	writeSpoolHolder(f)
	return f, nil
}
