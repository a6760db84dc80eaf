//go:build !unix || solaris || aix

package client

import "os"

// lockSpool opens the spool's lock file. Without flock(2) (outside Unix, and on Solaris and AIX)
// the file is not locked: keep one process per spool directory.
func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
