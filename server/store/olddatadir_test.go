package store

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// untarGz unpacks testdata archive name into a new temporary directory and returns it.
func untarGz(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o750)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o600)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestFSOpensOlderDataDir opens a data directory written by an older build of kvs (see
// testdata/datadir/README.md) and reads back every stream, tag and fragment it holds; a new
// fragment numbers on after the old ones.
func TestFSOpensOlderDataDir(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := mustOpenFS(t, untarGz(t, filepath.Join("testdata", "datadir", "cb4aedc.tgz")), FSOptions{})
	defer s.Close()
	if r := s.Recovered(); len(r) != 0 {
		t.Fatalf("clean data directory reported repairs %+v", r)
	}
	streams, err := s.ListStreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(streams) != 1 {
		t.Fatalf("%d streams, want cam only (gone was deleted): %+v", len(streams), streams)
	}
	st := streams[0]
	if st.Name != "cam" || st.RetentionHours != 48 || st.DeviceName != "porch" || st.MediaType != "video/h264" ||
		st.Status != "ACTIVE" || len(st.Tags) != 2 || st.Tags["site"] != "north" || st.Tags["floor"] != "2" {
		t.Fatalf("stream %+v", st)
	}
	frags, err := s.Range(ctx, "cam", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		number       uint64
		size         int64
		producerTime time.Time
	}{
		{1, 5929, time.UnixMilli(1796681257029)},
		{2, 5511, time.UnixMilli(1796681258029)},
	}
	if len(frags) != len(want) {
		t.Fatalf("fragments %v, want 1 and 2", numbers(frags))
	}
	for i, w := range want {
		f := frags[i]
		if f.Number != w.number || f.Size != w.size || !f.ProducerTime.Equal(w.producerTime) ||
			f.Duration != time.Second || f.ServerTime.IsZero() {
			t.Fatalf("fragment %d: %+v, want number %d, %d bytes, producer time %v, 1 s", i, f, w.number, w.size, w.producerTime)
		}
		rc, _, err := s.Open(ctx, "cam", f.Number)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("fragment %d: %v", f.Number, err)
		}
		if int64(len(b)) != w.size || string(b[:4]) != "\x1a\x45\xdf\xa3" {
			t.Fatalf("fragment %d: %d bytes starting % x, want %d bytes of MKV", f.Number, len(b), b[:4], w.size)
		}
	}
	next := appendOne(t, s, "cam", base, base, 100)
	if next.Number <= 2 {
		t.Fatalf("new fragment numbered %d, want after the old build's 2", next.Number)
	}
}
