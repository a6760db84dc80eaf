//go:build !(linux || darwin || freebsd || dragonfly || openbsd || netbsd || solaris || illumos)

package store

// filesystemUsage is not available here (Windows, AIX, Plan 9, …): a percent disk limit needs
// statfs or statvfs.
func filesystemUsage(string) (used, avail int64, err error) { return 0, 0, errNoSpaceCheck }
