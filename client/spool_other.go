//go:build !(unix || windows) || solaris || aix

package client

import "os"

// lockSpool opens the spool's lock file. Without flock(2) or LockFileEx (outside Unix and
// Windows, and on Solaris and AIX) the file is not locked: keep one process per spool directory.
func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
