package store_test

import (
	"hash/crc32"
	"testing"

	"github.com/openkvs/kvs/server/store"
	"github.com/openkvs/kvs/server/store/storetest"
)

// TestMem runs the behaviour suite over Mem, which cannot be reopened.
func TestMem(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
		return store.NewMem(), nil
	})
}

// Mem keeps no checksum: it verifies one given on append, so that a server test on Mem catches a
// wrong one (the FS and cluster stores would write it, and their reads would fail).
func TestMemChecksumVerified(t *testing.T) {
	t.Parallel()
	st := store.NewMem()
	defer st.Close()
	ctx := t.Context()
	if err := st.CreateStream(ctx, store.Stream{Name: "s", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	n, err := st.NextNumber(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a fragment")
	good := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n, Checksum: good + 1}, data); err == nil {
		t.Fatal("a wrong Checksum was accepted")
	}
	if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n, Checksum: good}, data); err != nil {
		t.Fatalf("the right Checksum: %v", err)
	}
}

// TestFS runs the behaviour suite over FS with the default options, and again with segments so
// small that most hold a few records: retention then deletes some of a stream's fragments and
// keeps others, and appends roll segments often.
func TestFS(t *testing.T) {
	t.Parallel()
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
