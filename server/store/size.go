package store

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxBytesTag is the stream tag that caps what a stream keeps, a kvs extension: its value is a
// size as ParseSize reads it ("500MB", "2GiB", "1048576"). A store deletes the stream's oldest
// fragments so that the payload bytes it keeps stay at most that (its newest fragment is always
// kept), before retention would: FS and Mem as appends pass the cap, a cluster in its retention
// pass. The server refuses a value ParseSize does not read.
const MaxBytesTag = "kvs:max-bytes"

var sizeUnits = []struct {
	suffix string
	scale  float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// ParseSize reads a byte size: a number with an optional unit, B, KB, MB, GB, TB (powers of
// 1000, as disks are sold) or KiB, MiB, GiB, TiB (powers of 1024), in any case, e.g. "500GB",
// "1.5GiB", "20 MB" or "1048576". The size must be positive and fit an int64.
func ParseSize(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	scale := 1.0
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(v, u.suffix); ok {
			v, scale = strings.TrimSpace(rest), u.scale
			break
		}
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, such as 500MB, 2GiB or 1048576", s)
	}
	b := n * scale
	if b < 1 || b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want at least 1 byte and less than 8 EiB", s)
	}
	return int64(b), nil
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
