//go:build unix

package mapped

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A mapping that reaches past the end of its file faults on the pages past it: Read says so, and
// the process lives on. A read within the file is no error.
func TestReadPastEnd(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("kvs"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := os.Getpagesize()
	m, err := syscall.Mmap(int(f.Fd()), 0, 3*page, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	var b byte
	if err := Read(func() { b = m[0] }); err != nil || b != 'k' {
		t.Fatalf("read within the file: %q, %v", b, err)
	}
	if err := Read(func() { b = m[2*page] }); !errors.Is(err, ErrPageFault) {
		t.Fatalf("read past the end of the file: %v, want ErrPageFault", err)
	}
	defer func() {
		if r := recover(); r != "other" {
			t.Errorf("another panic: recovered %v, want it to go on", r)
		}
	}()
	_ = Read(func() { panic("other") })
}
