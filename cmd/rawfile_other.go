//go:build !unix

package cmd

import (
	"os"

	"github.com/openkvs/kvs/internal/bufpool"
)

// mapRegion reads n bytes of f from off into a pooled buffer, and returns them with the function
// that gives the buffer back (the unix version maps them instead).
func mapRegion(f *os.File, off, n int64) ([]byte, func(), error) {
	b := bufpool.Get(int(n))[:n]
	if _, err := f.ReadAt(b, off); err != nil {
		bufpool.Put(b)
		return nil, nil, err
	}
	return b, func() { bufpool.Put(b) }, nil
}
