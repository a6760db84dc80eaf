//go:build unix && !linux

package server

import "errors"

// haveSendfile says whether bufConn.ReadFrom sends file sections with sendfile(2): only on Linux,
// where sendfile takes and moves an offset of its own as used here.
const haveSendfile = false

func sendfile(out, in int, off *int64, n int) (int, error) {
	return 0, errors.ErrUnsupported
}
