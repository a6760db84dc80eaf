// Package mapped reads memory-mapped files safely: a page that cannot be read (the file cut
// short by another process, an I/O error while the kernel fills it) raises SIGBUS, which would
// end the process; here it becomes an error.
package mapped

import (
	"errors"
	"runtime/debug"
)

// ErrPageFault is the error of a read of a mapped page that failed.
var ErrPageFault = errors.New("reading a mapped page failed (the file was cut short, or an I/O error)")

// Read runs fn, which reads mapped pages, and returns ErrPageFault when one of its reads faults.
// Any other panic of fn goes on.
func Read(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = ErrPageFault
		}
	}()
	fn()
	return nil
}
