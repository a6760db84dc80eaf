package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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

// writeSpoolHolder writes this process's PID to the lock file f, which it has locked.
func writeSpoolHolder(f *os.File) {
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
}
