package server

import "syscall"

// haveSendfile says whether bufConn.ReadFrom sends file sections with sendfile(2).
const haveSendfile = true

func sendfile(out, in int, off *int64, n int) (int, error) { return syscall.Sendfile(out, in, off, n) }
