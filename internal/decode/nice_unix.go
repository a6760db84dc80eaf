//go:build unix

package decode

import "syscall"

// lowerPriority puts process pid at nice 10, so that decoding yields the CPU to the server. It is
// best effort: an error leaves the process at the server's priority.
func lowerPriority(pid int) { _ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, 10) }
