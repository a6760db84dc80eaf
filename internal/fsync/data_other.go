//go:build !linux

package fsync

import "os"

// Data falls back to a full fsync where fdatasync is not available.
func Data(f *os.File) error { return f.Sync() }
