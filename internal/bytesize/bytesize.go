// Package bytesize reads and writes sizes in bytes as people type them: the flags of the CLI
// (--spool-max-bytes 4GiB, --spool-rate 8Mbit, --max-disk-usage 500GB) and the server's
// kvs:max-bytes stream tag read them alike.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var units = []struct {
	suffix string
	factor float64
}{ // longest first, so that "kib" is not read as "b"
	{"kbit", 1000.0 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// Parse reads a size: a number with an optional unit, in any case: B, kB, MB, GB, TB (powers of
// 1000, as disks are sold), KiB, MiB, GiB, TiB (powers of 1024), or kbit, Mbit, Gbit (bits: the
// value is divided by 8, for rates), e.g. "500GB", "1.5GiB", "20 MB", "8Mbit" or "1048576". The
// size is rounded to a whole byte; it may be 0, not negative, and must stay below 4 EiB.
func Parse(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	factor := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, factor = strings.TrimSpace(num), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || n < 0 || math.IsInf(n, 0) || n*factor > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q: want a size such as 1GiB, 500MB, 8Mbit or a number of bytes", s)
	}
	return int64(math.Round(n * factor)), nil
}

// Format writes n in the largest binary unit that keeps it whole below 10 of them, or with one
// decimal: 1GiB, 1.5GiB, 700MiB, 12345B. Parse reads it back (to the byte where it is whole).
func Format(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%d%s", n/u.size, u.name)
			}
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
