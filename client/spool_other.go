//go:build !unix

package client

import "os"

// lockSpool opens the spool's lock file. Outside Unix the file is not locked: keep one process
// per spool directory.
func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
