//go:build !unix

package backends

import "syscall"

func sysProcAttrAs(uid, gid uint32) *syscall.SysProcAttr { return nil }
