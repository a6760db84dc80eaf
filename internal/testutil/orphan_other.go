//go:build !linux

package testutil

import "os/exec"

// DieWithTest does nothing where the kernel cannot kill a child with its parent; the test's
// context still ends cmd when the test ends normally.
func DieWithTest(cmd *exec.Cmd) {}
