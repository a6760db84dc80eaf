//go:build unix && !solaris && !aix

package client

import (
	"errors"
	"os"
	"syscall"
)

// lockSpool takes an exclusive lock on the spool's lock file, so that two processes never send
// (and remove) the same fragments; the lock goes with the process. The file holds the PID of the
// holder, for the message another process gets.
func lockSpool(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil { //nolint:gosec // a file descriptor fits an int
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, spoolInUse(path)
		}
		return nil, err
	}
	writeSpoolHolder(f)
	return f, nil
}
