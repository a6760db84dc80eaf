//go:build linux

package testutil

import (
	"os/exec"
	"syscall"
)

// DieWithTest has cmd killed when the test process dies, also when it dies without cleaning up (a
// test binary past its -timeout panics: a player still reading a live URL was left running, and
// ffmpeg on a live DASH URL whose server is gone spins a core). Call it before cmd starts.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
