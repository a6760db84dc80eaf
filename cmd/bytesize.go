package cmd

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSize is a flag of a size in bytes, written as a number with an optional unit: B, kB, MB, GB
// (powers of 1000), KiB, MiB, GiB (powers of 1024), or kbit, Mbit, Gbit (bits: the value is
// divided by 8). Units are case-insensitive except that "b" alone is bytes. Rates take the same
// form, per second: --spool-rate 4Mbit.
type byteSize int64

var byteUnits = []struct {
	suffix string
	factor float64
}{ // longest first, so that "kib" is not read as "b"
	{"kbit", 1000.0 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9},
	{"b", 1},
}

func parseByteSize(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	factor := 1.0
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, factor = strings.TrimSpace(num), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 0 || math.IsInf(n, 0) || n*factor > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q: want a size such as 1GiB, 500MB, 8Mbit or a number of bytes", s)
	}
	return int64(math.Round(n * factor)), nil
}

func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

func (b *byteSize) Type() string { return "size" }

// formatBytes writes n in the largest binary unit that keeps it whole below 10 of them, or with
// one decimal: 1GiB, 1.5GiB, 700MiB, 12345B.
func formatBytes(n int64) string {
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
