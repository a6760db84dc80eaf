package client

import (
	"os/exec"
	"testing"
)

// A real full disk: a spool on a 512 KiB tmpfs, with MaxBytes (the default 1 GiB) far above what
// the disk holds, as on a small SD card. Appends go on: when the disk is full the oldest
// fragments are dropped to make room, as when the spool reaches MaxBytes, and told; the newest
// are kept, intact. Needs mount(2) (root with CAP_SYS_ADMIN); skipped where it is not allowed.
func TestSpoolDiskFull(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	if out, err := exec.CommandContext(t.Context(), "mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	var notices []string
	s := openTestSpool(t, dir, 0, 64<<10, &notices)
	const n, size = 60, 20_000 // 1.2 MB into 512 KiB
	seqs := appendN(t, s, 0, n, size)
	st := s.Stats()
	if st.Dropped == 0 || st.Fragments+st.Dropped != n {
		t.Fatalf("stats %+v after %d appends of %d bytes on a 512 KiB disk: want the oldest dropped, the rest kept", st, n, size)
	}
	if len(notices) == 0 {
		t.Errorf("no notice of the fragments dropped")
	}
	got := readAll(t, s, size) // checks each record's bytes
	if want := seqs[st.Dropped:]; len(got) != len(want) || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		t.Errorf("read back %v, want the newest %v", got, want)
	}
}
