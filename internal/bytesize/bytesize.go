// Package bytesize reads and writes sizes in bytes as people type them: the flags of the CLI
// (--spool-max-bytes 4GiB, --max-disk-usage 500GB) and the server's kvs:max-bytes stream tag read
// them alike, and rates (--spool-rate 8Mbit) the same way with bits allowed.
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
}{ // longest first, so that "kib" is not read as "b"; the first three are bits (rates only)
	{"kbit", 1000.0 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// Parse reads a size: a number with an optional unit, in any case: B, kB, MB, GB, TB (powers of
// 1000, as disks are sold) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "500GB", "1.5GiB",
// "20 MB" or "1048576". The size is rounded to a whole byte; it may be 0, not negative, and must
// stay below 4 EiB. Bits ("8Mbit") are refused: they are for rates (ParseRate).
func Parse(s string) (int64, error) { return parse(s, false) }

// ParseRate reads a rate in bytes per second: what Parse reads, or bits per second in kbit,
// Mbit, Gbit (the value is divided by 8), e.g. "8Mbit" or "1MB".
func ParseRate(s string) (int64, error) { return parse(s, true) }

func parse(s string, rate bool) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	factor := 1.0
	for i, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			if i < 3 && !rate {
				return 0, fmt.Errorf("%q: a size is in bytes (B, kB, MB, GB, KiB, MiB, GiB, ...); bits are for rates", s)
			}
			v, factor = strings.TrimSpace(num), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || n < 0 || math.IsInf(n, 0) || n*factor > math.MaxInt64/2 {
		if rate {
			return 0, fmt.Errorf("%q: want a rate per second such as 8Mbit, 1MB or a number of bytes", s)
		}
		return 0, fmt.Errorf("%q: want a size such as 1GiB, 500MB or a number of bytes", s)
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
