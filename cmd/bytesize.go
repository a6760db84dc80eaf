package cmd

import "github.com/openkvs/kvs/internal/bytesize"

// byteSize is a flag of a size in bytes, written as a number with an optional unit: B, kB, MB, GB
// (powers of 1000), KiB, MiB, GiB (powers of 1024), or kbit, Mbit, Gbit (bits: the value is
// divided by 8). Units are case-insensitive except that "b" alone is bytes. Rates take the same
// form, per second: --spool-rate 4Mbit.
type byteSize int64

// parseByteSize reads a size or a rate as every size flag does.
func parseByteSize(s string) (int64, error) { return bytesize.Parse(s) }

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

// formatBytes writes n as the flags show sizes: 1GiB, 1.5GiB, 12345B.
func formatBytes(n int64) string { return bytesize.Format(n) }
