package testutil

import "sync"

// Memo computes a value once per key for the whole test binary: what a tool reports of a file
// that does not change while the tests run (a testdata clip), or a fixture a tool makes the same
// way for several tests. An ffprobe or ffmpeg start costs its CPU mostly in the dynamic
// loader, whatever the work asked. The first caller of a key runs f; callers that come
// while it runs wait for it, and all share its answer, its error included. The zero Memo is ready
// for use, and safe for concurrent use. The values are shared: callers must not change them.
type Memo[K comparable, V any] struct {
	m sync.Map // K → func() (V, error), from sync.OnceValues
}

// Get returns f's answer for key, running f only for the first caller of key. f must not call
// t.Fatal, t.Skip or runtime.Goexit (the callers waiting for it would get no answer): it returns
// its error, and each caller fails with it.
func (m *Memo[K, V]) Get(key K, f func() (V, error)) (V, error) {
	once, ok := m.m.Load(key)
	if !ok {
		once, _ = m.m.LoadOrStore(key, sync.OnceValues(f))
	}
	return once.(func() (V, error))()
}
