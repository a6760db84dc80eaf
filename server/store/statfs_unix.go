//go:build linux || darwin || freebsd || dragonfly

package store

import "syscall"

// filesystemUsage returns the bytes used and available to unprivileged users on the filesystem
// that holds dir, as df counts them (used: size minus free blocks).
func filesystemUsage(dir string) (used, avail int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize) //nolint:unconvert // int64 on linux, uint32 on darwin
	return int64((uint64(st.Blocks) - uint64(st.Bfree)) * bs), int64(uint64(st.Bavail) * bs), nil
}
