//go:build unix

package store

import (
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/openkvs/kvs/internal/mapped"
	"github.com/openkvs/kvs/internal/record"
)

// checksumFile maps windows of the file at page boundaries: any offset and length, across
// windows, must give the CRC of exactly those bytes.
func TestChecksumFile(t *testing.T) {
	t.Parallel()
	data := make([]byte, 2*mapWindow+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "seg")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct{ off, n int64 }{
		{0, 0}, {0, 1}, {1, 4095}, {4095, 2}, {48, 1000}, {0, mapWindow}, {7, mapWindow},
		{4096, mapWindow + 1}, {100, 2 * mapWindow}, {0, int64(len(data))}, {mapWindow - 3, mapWindow + 12000},
	} {
		got, err := checksumFile(f, c.off, c.n)
		if err != nil {
			t.Fatalf("off %d n %d: %v", c.off, c.n, err)
		}
		if want := crc32.Checksum(data[c.off:c.off+c.n], record.Castagnoli); got != want {
			t.Errorf("off %d n %d: crc %08x, want %08x", c.off, c.n, got, want)
		}
	}
}

// Pages past the end of the file fault (SIGBUS) when read through a mapping: checksumFile
// reports that as an error instead of crashing the process.
func TestChecksumFilePastEnd(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "seg")
	if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := checksumFile(f, 0, 3*int64(os.Getpagesize())); !errors.Is(err, mapped.ErrPageFault) {
		t.Fatalf("checksum past the end of the file: %v, want mapped.ErrPageFault", err)
	}
}
