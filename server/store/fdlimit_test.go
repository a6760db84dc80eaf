//go:build linux

package store

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// fdChild marks the process of this test binary that TestFSSegmentCreateFails starts: it runs
// out of file descriptors, which the test process itself must not (its tests run in parallel).
const fdChild = "KVS_STORE_TEST_FD_CHILD"

// TestFSSegmentCreateFails: an append whose new segment file is created but whose directory
// fsync cannot run (the process is out of file descriptors: the file took the last one) fails,
// and once descriptors are free again the stream takes appends. The file stayed behind under
// the sequence number the next segment was given again, so every later append of the stream
// failed ("file exists") until a restart.
func TestFSSegmentCreateFails(t *testing.T) {
	if os.Getenv(fdChild) == "1" {
		segmentCreateFails(t)
		return
	}
	t.Parallel()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFSSegmentCreateFails$", "-test.count=1")
	cmd.Env = append(os.Environ(), fdChild+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func segmentCreateFails(t *testing.T) {
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	defer s.Close()
	mustCreate(t, s, "cam", 24)
	ctx := context.Background()
	next := func() uint64 {
		n, err := s.NextNumber(ctx, "cam")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n1, n2 := next(), next()
	// Take every free descriptor but one: the append's first file (its stream's directory,
	// opened to fsync the streams directory, then closed) and then its segment file get it, and
	// the fsync of the stream's directory finds none.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = min(lim.Cur, 4096)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, f)
	}
	fillers[len(fillers)-1].Close()
	fillers = fillers[:len(fillers)-1]
	err := Append(ctx, s, "cam", FragmentMeta{Number: n1, ServerTime: time.Now()}, payload("cam", n1, 100))
	for _, f := range fillers {
		f.Close()
	}
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("append with no descriptor left: %v, want EMFILE", err)
	}
	if err := Append(ctx, s, "cam", FragmentMeta{Number: n2, ServerTime: time.Now()}, payload("cam", n2, 100)); err != nil {
		t.Fatalf("append once descriptors are free again: %v", err)
	}
	if got, err := s.Range(ctx, "cam", 0, 0); err != nil || len(got) != 1 || got[0].Number != n2 {
		t.Fatalf("stored %v, %v; want only %d", numbers(got), err, n2)
	}
}
