package testutil

import (
	"io"
	"sync"
)

// BeforeFirstRead returns rc with f run once, before its first Read returns: a handler wrap's way
// to act (delete a stream, say) once a server has started on a request's body.
func BeforeFirstRead(rc io.ReadCloser, f func()) io.ReadCloser {
	return &readHook{ReadCloser: rc, f: f}
}

type readHook struct {
	io.ReadCloser
	once sync.Once
	f    func()
}

func (r *readHook) Read(p []byte) (int, error) {
	r.once.Do(r.f)
	return r.ReadCloser.Read(p)
}
