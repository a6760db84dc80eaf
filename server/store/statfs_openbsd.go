package store

import "syscall"

// filesystemUsage returns the bytes used and available to unprivileged users on the filesystem
// that holds dir, as df counts them (used: size minus free blocks). OpenBSD's statfs names its
// fields F_*.
func filesystemUsage(dir string) (used, avail int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.F_bsize)
	return int64((st.F_blocks - st.F_bfree) * bs), st.F_bavail * int64(bs), nil
}
