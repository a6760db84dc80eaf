//go:build netbsd || solaris || illumos

package store

import "golang.org/x/sys/unix"

// filesystemUsage returns the bytes used and available to unprivileged users on the filesystem
// that holds dir, as df counts them (used: size minus free blocks). These systems have statvfs,
// whose block counts are in fragments (Frsize), not statfs.
func filesystemUsage(dir string) (used, avail int64, err error) {
	var st unix.Statvfs_t
	if err := unix.Statvfs(dir, &st); err != nil {
		return 0, 0, err
	}
	fs := uint64(st.Frsize)
	return int64((uint64(st.Blocks) - uint64(st.Bfree)) * fs), int64(uint64(st.Bavail) * fs), nil
}
