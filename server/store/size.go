package store

import (
	"errors"
	"fmt"

	"github.com/openkvs/kvs/internal/bytesize"
)

// MaxBytesTag is the stream tag that caps what a stream keeps, a kvs extension: its value is a
// size as ParseSize reads it ("500MB", "2GiB", "1048576"). A store deletes the stream's oldest
// fragments so that the payload bytes it keeps stay at most that (its newest fragment is always
// kept), before retention would: FS and Mem as appends pass the cap, a cluster in its retention
// pass. The server refuses a value ParseSize does not read.
const MaxBytesTag = "kvs:max-bytes"

// ParseSize reads a byte size as internal/bytesize does: a number with an optional unit, B, KB,
// MB, GB, TB (powers of 1000, as disks are sold) or KiB, MiB, GiB, TiB (powers of 1024), in any
// case, e.g. "500GB", "1.5GiB", "20 MB" or "1048576". The size must be at least 1 byte.
func ParseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("size %w", err)
	}
	if n < 1 {
		return 0, fmt.Errorf("size %q: want at least 1 byte", s)
	}
	return n, nil
}

// MaxBytes returns the cap the stream's MaxBytesTag sets, or 0 when it has none. A value that
// ParseSize does not read is an error (and no cap).
func MaxBytes(st Stream) (int64, error) {
	v, ok := st.Tags[MaxBytesTag]
	if !ok {
		return 0, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("stream %s: tag %s: %w", st.Name, MaxBytesTag, err)
	}
	return n, nil
}

// errNoSpaceCheck is returned where the filesystem's size cannot be read (no statfs).
var errNoSpaceCheck = errors.New("store: this system cannot report a filesystem's size: give the disk limit in bytes")
