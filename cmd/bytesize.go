package cmd

import "github.com/openkvs/kvs/internal/bytesize"

// byteSize is a flag of a size in bytes, written as a number with an optional unit, in any case:
// B, kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024) (bytesize.Parse).
type byteSize int64

// parseByteSize reads a size as every size flag does.
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

// byteRate is a flag of a rate in bytes per second: what byteSize takes, or bits per second
// (kbit, Mbit, Gbit): --spool-rate 4Mbit (bytesize.ParseRate).
type byteRate int64

func (r *byteRate) Set(s string) error {
	n, err := bytesize.ParseRate(s)
	if err != nil {
		return err
	}
	*r = byteRate(n)
	return nil
}

func (r *byteRate) String() string { return formatBytes(int64(*r)) + "/s" }

func (r *byteRate) Type() string { return "rate" }

// formatBytes writes n as the flags show sizes: 1GiB, 1.5GiB, 12345B.
func formatBytes(n int64) string { return bytesize.Format(n) }
