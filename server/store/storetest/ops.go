package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// testReady: an open store is ready (the suite's stores have their backends up).
func testReady(t *testing.T, st store.Store) {
	if err := st.Ready(t.Context()); err != nil {
		t.Fatalf("Ready on a fresh store: %v", err)
	}
	mustCreate(t, st, "s", 1)
	appendN(t, st, "s", 2, 100)
	if err := st.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after appends: %v", err)
	}
}

// checkStats compares Stats with what Range lists of streams.
func checkStats(t testing.TB, st store.Store, what string, streams ...string) store.Stats {
	t.Helper()
	got, err := st.Stats(context.Background())
	if err != nil {
		t.Fatalf("%s: Stats: %v", what, err)
	}
	var frags, payload int64
	for _, s := range streams {
		for _, m := range stored(t, st, s) {
			frags++
			payload += m.Size
		}
	}
	if got.Streams != len(streams) || got.Fragments != frags || got.Bytes < payload {
		t.Fatalf("%s: Stats %+v, want %d streams, %d fragments, at least %d bytes", what, got, len(streams), frags, payload)
	}
	return got
}

// testStats: Stats counts streams and readable fragments, and bytes at least their payloads, as
// appends, retention and deletion change them.
func testStats(t *testing.T, st store.Store) {
	ctx := t.Context()
	checkStats(t, st, "empty store")
	mustCreate(t, st, "a", 1)
	mustCreate(t, st, "b", 24)
	checkStats(t, st, "two empty streams", "a", "b")
	appendN(t, st, "a", 5, 1000)
	appendN(t, st, "b", 3, 2000)
	before := checkStats(t, st, "after appends", "a", "b")
	if before.Fragments != 8 {
		t.Fatalf("Stats counts %d fragments after 8 appends", before.Fragments)
	}
	enforce(t, st, base.Add(2*time.Hour), "a", "b") // all of a expires
	after := checkStats(t, st, "after retention", "a", "b")
	if after.Fragments != 3 || after.Bytes >= before.Bytes {
		t.Fatalf("after retention removed a's 5 fragments: Stats %+v (before %+v)", after, before)
	}
	if err := st.DeleteStream(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	checkStats(t, st, "after deleting b", "a")
}

// testStreamCap: a stream tagged kvs:max-bytes keeps the newest fragments whose payloads fit
// the cap (always the newest one), after appends and at the latest after EnforceRetention; a
// lowered cap applies at the next pass; other streams are not touched; retention's count leaves
// the cap's deletions out.
func testStreamCap(t *testing.T, st store.Store) {
	ctx := t.Context()
	err := st.CreateStream(ctx, store.Stream{Name: "capped", RetentionHours: 24, Status: "ACTIVE", CreationTime: base,
		Version: "v1", Tags: map[string]string{store.MaxBytesTag: "8000"}})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, "free", 24)
	frags := appendN(t, st, "capped", 40, 1000)
	free := appendN(t, st, "free", 40, 1000)
	capped := func(limit int64) {
		t.Helper()
		if n, err := st.EnforceRetention(ctx, base); err != nil || n != 0 {
			t.Fatalf("EnforceRetention before any fragment expired: %d, %v (cap deletions are not retention's)", n, err)
		}
		got, err := st.Range(ctx, "capped", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, m := range got {
			sum += m.Size
		}
		if len(got) == 0 || sum > limit {
			t.Fatalf("capped at %d bytes keeps %d fragments, %d bytes", limit, len(got), sum)
		}
		checkMetas(t, "capped keeps its newest fragments", got, frags[len(frags)-len(got):])
		for _, m := range frags[:len(frags)-len(got)] {
			checkGone(t, st, "capped", m.Number)
		}
	}
	capped(8000)
	if _, err := st.UpdateStream(ctx, "capped", func(s *store.Stream) error { s.Tags[store.MaxBytesTag] = "3KB"; return nil }); err != nil {
		t.Fatal(err)
	}
	capped(3000)
	// Without the tag nothing more goes.
	if _, err := st.UpdateStream(ctx, "capped", func(s *store.Stream) error { delete(s.Tags, store.MaxBytesTag); return nil }); err != nil {
		t.Fatal(err)
	}
	kept := len(stored(t, st, "capped"))
	frags = append(frags, appendN(t, st, "capped", 10, 1000)...)
	if _, err := st.EnforceRetention(ctx, base); err != nil {
		t.Fatal(err)
	}
	if got := len(stored(t, st, "capped")); got != kept+10 {
		t.Fatalf("without a cap: %d fragments, want %d", got, kept+10)
	}
	got, _ := st.Range(ctx, "free", 0, 0)
	checkMetas(t, "the stream without a cap", got, free)
}
