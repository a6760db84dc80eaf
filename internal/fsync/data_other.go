//go:build !linux

package fsync

import "os"

// Data falls back to a full fsync where fdatasync is not available.
func Data(f *os.File) error { return f.Sync() }

// Drop does nothing here: the page cache is left to the kernel.
func Drop(path string, off, n int64) error { return nil }
