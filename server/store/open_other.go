//go:build !windows

package store

import "os"

// openSegment opens a segment file: os.OpenFile, whose files can be removed while open here
// (open_windows.go shares them for deletion explicitly).
func openSegment(path string, flag int) (*os.File, error) { return os.OpenFile(path, flag, 0o600) }
