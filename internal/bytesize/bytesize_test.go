package bytesize

import (
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: an error
	}{
		{"1GiB", 1 << 30}, {"1.5gib", 3 << 29}, {"500MB", 500e6}, {"20 MB", 20e6}, {"2TiB", 2 << 40}, {"1t", 1e12},
		{"8Mbit", -1}, {"64kbit", -1}, {"256KiB", 256 << 10}, {"2k", 2000}, {"10B", 10}, {"1048576", 1 << 20}, {"0", 0},
		{"", -1}, {"-1", -1}, {"1XB", -1}, {"lots", -1}, {"1e30", -1}, {"NaN", -1}, {"inf", -1}, {"GiB", -1},
	} {
		got, err := Parse(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: an error
	}{
		{"8Mbit", 1e6}, {"64kbit", 8000}, {"1gbit", 125e6}, {"1MB", 1e6}, {"2MiB", 2 << 20}, {"1000", 1000},
		{"", -1}, {"-8Mbit", -1}, {"fast", -1},
	} {
		got, err := ParseRate(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParse: whatever the input, Parse gives an error or a size from 0 to 4 EiB, and what Format
// writes of it reads back to within the rounding of its one decimal.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1GiB", "1.5GiB", "8Mbit", "20 MB", "0", "-0", "1e18", "0x10", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n < 0 || n > math.MaxInt64/2+1 {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
		back, err := Parse(Format(n))
		if err != nil {
			t.Fatalf("Parse(Format(%d) = %q): %v", n, Format(n), err)
		}
		if d := math.Abs(float64(back - n)); d > float64(n)/20+1 {
			t.Fatalf("Format(%d) = %q reads back as %d", n, Format(n), back)
		}
	})
}
