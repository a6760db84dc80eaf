//go:build !windows

package fsync

// dirSyncs says whether Dir fsyncs the directory (dir_windows.go: it cannot there).
const dirSyncs = true
