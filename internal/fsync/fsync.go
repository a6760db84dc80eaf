// Package fsync makes file writes durable: Data flushes a file's data (fdatasync where the system
// has it), Dir makes the entries of a directory (a file created, renamed or removed) durable. The
// server's FS store and the client's spool both use them. It imports only the standard library.
package fsync

import "os"

// Dir fsyncs the directory dir, so that files created, renamed or removed in it survive a crash.
// On Windows it only checks that dir can be opened (dirSyncs, dir_windows.go).
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if dirSyncs {
		err = d.Sync()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
