//go:build !unix

package store

// filesystemUsage is not available here: a percent disk limit needs statfs.
func filesystemUsage(string) (used, avail int64, err error) { return 0, 0, errNoSpaceCheck }
