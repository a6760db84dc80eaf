package piecewrite

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

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
