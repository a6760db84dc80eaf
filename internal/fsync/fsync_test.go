package fsync_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/openkvs/kvs/internal/fsync"
)

// TestDir: Dir succeeds on a directory that just took a new file, on every system kvs is
// released for (on Windows a directory handle cannot be flushed: GOOS=windows go test -c).
func TestDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("kvs\n")); err != nil {
		t.Fatal(err)
	}
	if err := fsync.Data(f); err != nil {
		t.Fatalf("Data: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsync.Dir(dir); err != nil {
		t.Fatalf("Dir(%s): %v", dir, err)
	}
}

// TestDirMissing: a directory that is not there is an error everywhere, also where Dir does not
// sync.
func TestDirMissing(t *testing.T) {
	t.Parallel()
	if err := fsync.Dir(filepath.Join(t.TempDir(), "gone")); err == nil {
		t.Fatal("Dir of a missing directory: no error")
	}
}
