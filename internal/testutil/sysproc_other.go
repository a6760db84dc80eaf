//go:build !unix

package testutil

import "syscall"

func sysProcAttrAs(uid, gid uint32) *syscall.SysProcAttr { return nil }
