//go:build !unix

package store

import (
	"hash/crc32"
	"io"
	"os"

	"github.com/openkvs/kvs/internal/record"
)

// checksumFile returns the CRC-32C of n bytes of f from off, read through a buffer (the unix
// version maps them instead).
func checksumFile(f *os.File, off, n int64) (uint32, error) {
	h := crc32.New(record.Castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}
