//go:build unix && !solaris && !aix

package client

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A spool closed and opened again by the same process, while a child forked in between still
// shares the lock's open file (until its exec closes it), is not "in use": the open waits for
// the lock this process let go of. The child is modelled by a second open file of the lock
// file, locked, holding this process's PID as the lock file does, let go of 100 ms later. CI
// failed once on the reopen of TestSpoolRoundTrip with "in use by process N", N the test's own.
func TestSpoolReopenWhileForkHoldsLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestSpool(t, dir, 0, 10_000, nil)
	s.Close()
	child := lockedSpoolLock(t, dir)
	go func() {
		time.Sleep(100 * time.Millisecond)
		child.Close() // the child's exec
	}()
	s2, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "cam"})
	if err != nil {
		t.Fatalf("reopening the spool of this process while a forked child still held its lock: %v", err)
	}
	s2.Close()

	// Held under another process's PID, the spool is in use at once.
	other := lockedSpoolLock(t, dir)
	if err := other.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := other.WriteAt([]byte("1\n"), 0); err != nil {
		t.Fatal(err)
	}
	if s3, err := OpenSpool(SpoolConfig{Dir: dir, Stream: "cam"}); err == nil {
		s3.Close()
		t.Fatal("opened a spool another process holds")
	}
}

// lockedSpoolLock opens dir's spool lock file anew and locks it (waiting up to 2 s): another open
// file of it, as a forked child or another process has. The test's cleanup closes it.
func lockedSpoolLock(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, spoolLockFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	// Another test's fork may hold this process's last lock for a moment (the very case above):
	// a full run failed here with EAGAIN right after s.Close.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) //nolint:gosec // a file descriptor fits an int
		if err == nil {
			return f
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) { //nolint:errorlint // Flock returns the Errno as is
			t.Fatal(err)
		}
	}
}
