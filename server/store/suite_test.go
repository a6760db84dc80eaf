package store_test

import (
	"testing"

	"github.com/openkvs/kvs/server/store"
	"github.com/openkvs/kvs/server/store/storetest"
)

// TestMem runs the behaviour suite over Mem, which cannot be reopened.
func TestMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
		return store.NewMem(), nil
	})
}

// TestFS runs the behaviour suite over FS with the default options, and again with segments so
// small that most hold a few records: retention then deletes some of a stream's fragments and
// keeps others, and appends roll segments often.
func TestFS(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts store.FSOptions
	}{
		{"default", store.FSOptions{}},
		{"small segments", store.FSOptions{MaxSegmentBytes: 1 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
				dir := t.TempDir()
				open := func(t *testing.T) store.Store {
					s, err := store.OpenFS(dir, tc.opts)
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
				return open(t), open
			})
		})
	}
}
