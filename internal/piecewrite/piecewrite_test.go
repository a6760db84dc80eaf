package piecewrite

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/fsync"
)

// WriteAt and Writer write every byte where it belongs, in pieces of at most Size.
func TestPieces(t *testing.T) {
	b := make([]byte, 3*Size+123)
	for i := range b {
		b[i] = byte(i * 7)
	}
	var pieces []int
	var out bytes.Buffer
	w := Writer{writerFunc(func(p []byte) (int, error) { pieces = append(pieces, len(p)); return out.Write(p) })}
	if n, err := w.Write(b); n != len(b) || err != nil || !bytes.Equal(out.Bytes(), b) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if len(pieces) != 4 || pieces[0] != Size || pieces[3] != 123 {
		t.Errorf("pieces %v", pieces)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteAt(f, b, 10); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got[10:], b) {
		t.Errorf("WriteAt: %d bytes read back, not what was written", len(got))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// BenchmarkFileWrite appends 5 MB records (2 s of a 20 Mbit/s stream: a fragment) to a file and
// fdatasyncs each, as the FS store does, in one write each or in Size pieces; the file is cut
// back to empty every 200 MB. It reports the process's CPU per GB (user + system, from
// getrusage) next to the wall time, since fdatasync waits on the disk:
// go test -run '^$' -bench FileWrite -count 3 ./internal/piecewrite
func BenchmarkFileWrite(b *testing.B) {
	rec := make([]byte, 5_000_000)
	for _, bc := range []struct {
		name  string
		write func(f *os.File, off int64) error
	}{
		{"one-write", func(f *os.File, off int64) error { _, err := f.WriteAt(rec, off); return err }},
		{"pieces", func(f *os.File, off int64) error { return WriteAt(f, rec, off) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "seg"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(int64(len(rec)))
			var off int64
			cpu0 := cpuTime()
			for b.Loop() {
				if off >= 200e6 {
					if err := f.Truncate(0); err != nil {
						b.Fatal(err)
					}
					off = 0
				}
				if err := bc.write(f, off); err != nil {
					b.Fatal(err)
				}
				if err := fsync.Data(f); err != nil {
					b.Fatal(err)
				}
				off += int64(len(rec))
			}
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(b.N)*float64(len(rec))/1e9), "cpu-s/GB")
		})
	}
}

// BenchmarkPageCacheGrowth appends 5 MB records with an fdatasync each, as the FS store does,
// into new 200 MB files that are all kept until the end: the page cache grows by every byte
// written ("keep"), or each record's pages are dropped once synced ("drop", fsync.Drop, what
// the store's written cache does). It reports the process's CPU per GB over all ops, and over
// the ops past the first GB ("late-cpu-s/GB"), where a VM whose idle memory went back to its host
// pays a host fault on each new page (README, Performance II). Give it more than a GB of ops:
// go test -run '^$' -bench PageCacheGrowth -benchtime 480x ./internal/piecewrite
func BenchmarkPageCacheGrowth(b *testing.B) {
	rec := make([]byte, 5_000_000)
	for i := range rec {
		rec[i] = byte(i)
	}
	for _, drop := range []bool{false, true} {
		name := map[bool]string{false: "keep", true: "drop"}[drop]
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(len(rec)))
			var f *os.File
			var off, written int64
			var late time.Duration
			cpu0 := cpuTime()
			for b.Loop() {
				if f == nil || off >= 200e6 {
					if f != nil {
						f.Close()
					}
					var err error
					if f, err = os.Create(filepath.Join(dir, fmt.Sprintf("seg%d", written))); err != nil {
						b.Fatal(err)
					}
					off = 0
				}
				c := cpuTime()
				if err := WriteAt(f, rec, off); err != nil {
					b.Fatal(err)
				}
				if err := fsync.Data(f); err != nil {
					b.Fatal(err)
				}
				if drop {
					if err := fsync.Drop(f.Name(), off, int64(len(rec))); err != nil {
						b.Fatal(err)
					}
				}
				if written >= 1e9 {
					late += cpuTime() - c
				}
				off += int64(len(rec))
				written += int64(len(rec))
			}
			if f != nil {
				f.Close()
			}
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(written)/1e9), "cpu-s/GB")
			if written > 1e9 {
				b.ReportMetric(late.Seconds()/(float64(written-1e9)/1e9), "late-cpu-s/GB")
			}
		})
	}
}
