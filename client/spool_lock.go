package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// spoolInUse is the error for a spool whose lock file (path) another holder has locked; the
// file names the holder's PID.
func spoolInUse(path string) error {
	b, _ := os.ReadFile(path)
	holder := "another process"
	if pid := strings.TrimSpace(string(b)); pid != "" {
		holder = "process " + pid
	}
	return fmt.Errorf("in use by %s: one spool directory per camera and process", holder)
}

// ownLockWait is how long lockSpool waits for a lock held under this process's own PID (one it
// let go of, still held by a child forked meanwhile) before it says the spool is in use.
const ownLockWait = 2 * time.Second

// heldByUs reports whether the lock file at path names this process as its holder.
func heldByUs(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid())
}

// writeSpoolHolder writes this process's PID to the lock file f, which it has locked.
func writeSpoolHolder(f *os.File) {
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
}
