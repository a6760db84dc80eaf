package client

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// benchSpoolDir is where the spool benchmarks write: KVS_BENCH_DIR (scripts/perf-edge.sh puts it
// on the disk it measures with dd), else a temporary directory.
func benchSpoolDir(b *testing.B) string {
	if d := os.Getenv("KVS_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "spool-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkSpoolAppend is the spool's steady state for one camera: each 512 KiB fragment (2 s at
// 2 Mbit/s) written and fdatasynced, then made final (its segment removed once all of it is).
// Compare with dd bs=512K oflag=dsync on the same disk (scripts/perf-edge.sh does).
func BenchmarkSpoolAppend(b *testing.B) {
	benchSpoolAppend(b, 1)
}

// BenchmarkSpoolAppend16 is the same for 16 cameras at once, each with its own spool, as an agent
// whose endpoint is down writes them.
func BenchmarkSpoolAppend16(b *testing.B) {
	benchSpoolAppend(b, 16)
}

func benchSpoolAppend(b *testing.B, cameras int) {
	dir := benchSpoolDir(b)
	header, body := make([]byte, 300), make([]byte, 512<<10)
	_, _ = rand.Read(body)
	spools := make([]*Spool, cameras)
	for i := range spools {
		s, err := OpenSpool(SpoolConfig{Dir: filepath.Join(dir, fmt.Sprint(i)), Stream: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		spools[i] = s
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	var wg sync.WaitGroup
	for c, s := range spools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < b.N; i += cameras {
				seq, err := s.append(header, body, int64(i), 1_000_000)
				if err != nil {
					b.Error(err)
					return
				}
				s.done(seq)
			}
		}()
	}
	wg.Wait()
}
