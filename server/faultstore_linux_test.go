package server

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/openkvs/kvs/server/store"
)

// A real full disk: the FS store on a 1.5 MiB tmpfs. Fragments go in until the disk is full;
// the failed one is ERROR 5001, everything acknowledged before stays readable (also after a
// reopen), and once space is freed a new upload is stored. Needs mount(2) (root with
// CAP_SYS_ADMIN); skipped where it is not allowed.
func TestDiskFullTmpfs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	if out, err := exec.CommandContext(t.Context(), "mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	fsStore, err := store.OpenFS(filepath.Join(dir, "kvs"), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newMediaEnvStore(t, fsStore)
	e.createStream(t, "cam", 1)
	filler := filepath.Join(dir, "filler")
	// Leave about 400 KiB: the clip's fragments are 5 to 30 kB.
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if err := os.WriteFile(filler, make([]byte, max(0, free-400<<10)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	var persisted []string
	var failed *ackEvent
	clusters := make([][]byte, 200)
	for i := range clusters {
		clusters[i] = c.cluster(t, i, baseMillis)
	}
	writeErr := make(chan error, 1)
	go func() {
		for _, b := range clusters {
			if _, err := pc.pw.Write(b); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- pc.pw.Close()
	}()
	var last ackEvent
	for ev := range pc.acks {
		last = ev
		switch ev.EventType {
		case ackPersisted:
			persisted = append(persisted, ev.FragmentNumber)
		case ackError:
			failed = &ev
		}
	}
	if failed == nil || failed.ErrorId != 5001 {
		t.Fatalf("want ERROR 5001 once the disk is full, got %+v after %d PERSISTED (last ack %+v, body writer: %v)", failed, len(persisted), last, <-writeErr)
	}
	check := func(st store.Store) {
		t.Helper()
		metas, frags := storedFragments(t, st, "cam")
		have := map[string]bool{}
		for i, m := range metas {
			have[formatFragmentNumber(m.Number)] = true
			if len(frags[i].Frames) == 0 {
				t.Fatalf("fragment %d has no frames", m.Number)
			}
		}
		for _, n := range persisted {
			if !have[n] {
				t.Fatalf("PERSISTED fragment %s is missing", n)
			}
		}
	}
	check(e.store)
	t.Logf("disk full after %d PERSISTED fragments: %+v", len(persisted), *failed)

	// Free the space: a new upload is stored.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	pc2 := e.startPut(t, "cam")
	pc2.write(c.header())
	n := pc2.fragment(c.cluster(t, 500, baseMillis), c.fragTimecode(500, baseMillis), true)
	pc2.end()
	persisted = append(persisted, formatFragmentNumber(n))
	check(e.store)

	// And it all survives a reopen.
	e.ts.Close()
	e.srv.Close()
	if err := fsStore.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Logf("close: %v", err)
	}
	reopened, err := store.OpenFS(filepath.Join(dir, "kvs"), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	t.Logf("recovery after the full disk: %+v", reopened.Recovered())
	check(reopened)
}
