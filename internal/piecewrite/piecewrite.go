// Package piecewrite splits large writes into pieces of at most Size bytes. kvs writes whole
// fragments, megabytes at high bitrates: the FS store's records and the CLI's output files go
// through here. Appending 5 MB records with an fdatasync each (BenchmarkFileWrite, Linux 6.18,
// ext4, quiet machine) cost 0.41-0.45 s of CPU per GB in one write against 0.32 in 1 MiB pieces;
// in BenchmarkIngestCPU (server/) the pieces took bulk PutMedia from 2.3-2.9 to 1.5-1.7 s per GB
// (commit 9a0d09d, alternating runs on a loaded machine).
package piecewrite

import "io"

// Size is the most one write call passes on.
const Size = 1 << 20

// WriteAt writes b at off in pieces of at most Size bytes.
func WriteAt(w io.WriterAt, b []byte, off int64) error {
	for len(b) > 0 {
		n := min(len(b), Size)
		if _, err := w.WriteAt(b[:n], off); err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// Writer passes each Write on to W in pieces of at most Size bytes.
type Writer struct{ W io.Writer }

func (p Writer) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k, err := p.W.Write(b[:min(len(b), Size)])
		n += k
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
