package record

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCombineCRC(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 7, 64, 1000, 65536, 5_000_001} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(b, Castagnoli)
		for _, cut := range []int{0, n / 3, n / 2, n} {
			got := CombineCRC(crc32.Checksum(b[:cut], Castagnoli), crc32.Checksum(b[cut:], Castagnoli), int64(n-cut))
			if got != want {
				t.Errorf("%d bytes cut at %d: %08x, want %08x", n, cut, got, want)
			}
		}
	}
}

// FuzzCombineCRC: the combined checksum of any split of any input is the input's checksum.
func FuzzCombineCRC(f *testing.F) {
	f.Add([]byte("hello, world"), uint(5))
	f.Add(make([]byte, 300), uint(299))
	f.Fuzz(func(t *testing.T, b []byte, cut uint) {
		c := int(cut % uint(len(b)+1))
		got := CombineCRC(crc32.Checksum(b[:c], Castagnoli), crc32.Checksum(b[c:], Castagnoli), int64(len(b)-c))
		if want := crc32.Checksum(b, Castagnoli); got != want {
			t.Fatalf("cut at %d of %d: %08x, want %08x", c, len(b), got, want)
		}
	})
}

func BenchmarkCombineCRC(b *testing.B) {
	for b.Loop() {
		CombineCRC(0x12345678, 0x9abcdef0, 5_000_000)
	}
}
