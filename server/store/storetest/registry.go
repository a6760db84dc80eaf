package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

func testRegistry(t *testing.T, st store.Store) {
	ctx := t.Context()
	if err := st.CreateStream(ctx, store.Stream{}); err == nil {
		t.Fatal("create with empty name: no error")
	}
	for _, name := range []string{"b", "..", "a", ".", "A-very_long.name"} {
		mustCreate(t, st, name, 24)
	}
	if err := st.CreateStream(ctx, store.Stream{Name: "a"}); !errors.Is(err, store.ErrStreamExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	list, err := st.ListStreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	if want := []string{".", "..", "A-very_long.name", "a", "b"}; !slices.Equal(names, want) {
		t.Fatalf("list: %q, want %q", names, want)
	}
	s, err := st.GetStream(ctx, "..")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != ".." || s.RetentionHours != 24 || !s.CreationTime.Equal(base) || s.Tags["k"] != "v" || s.Status != "ACTIVE" || s.Version != "v1-.." {
		t.Fatalf("get: %+v", s)
	}
	s.Tags["k"] = "changed" // a copy: must not leak into the store
	if s, _ := st.GetStream(ctx, ".."); s.Tags["k"] != "v" {
		t.Fatal("GetStream returned shared tags")
	}
	list[0].Tags["k"] = "changed"
	if s, _ := st.GetStream(ctx, list[0].Name); s.Tags["k"] != "v" {
		t.Fatal("ListStreams returned shared tags")
	}

	boom := errors.New("boom")
	if _, err := st.UpdateStream(ctx, "a", func(s *store.Stream) error { s.Version = "x"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update with failing fn: %v", err)
	}
	if s, _ := st.GetStream(ctx, "a"); s.Version != "v1-a" {
		t.Fatalf("failed update changed the stream: version %q", s.Version)
	}
	got, err := st.UpdateStream(ctx, "a", func(s *store.Stream) error {
		s.Version, s.RetentionHours, s.Tags["n"] = "v2", 48, "new"
		return nil
	})
	if err != nil || got.Version != "v2" || got.RetentionHours != 48 {
		t.Fatalf("update: %+v, %v", got, err)
	}
	got.Tags["n"] = "changed" // the returned copy is the caller's
	if s, _ := st.GetStream(ctx, "a"); s.Version != "v2" || s.Tags["n"] != "new" || s.RetentionHours != 48 {
		t.Fatalf("after update: %+v", s)
	}
	if _, err := st.UpdateStream(ctx, "a", func(s *store.Stream) error { s.Name = "z"; return nil }); err == nil {
		t.Fatal("rename through update: no error")
	}
	if _, err := st.GetStream(ctx, "z"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("refused rename created stream z: %v", err)
	}
	if err := st.DeleteStream(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetStream(ctx, "b"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := st.DeleteStream(ctx, "b", ""); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if list, _ := st.ListStreams(ctx); len(list) != 4 {
		t.Fatalf("list after delete: %d streams", len(list))
	}
}

// testUpdateAtomic: UpdateStream's read-modify-write is atomic, so concurrent updates of one
// stream (the server's tag merges, version checks) never lose each other's changes.
func testUpdateAtomic(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 0)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := st.UpdateStream(ctx, "s", func(s *store.Stream) error {
					s.RetentionHours++
					s.Tags[fmt.Sprintf("w%d-%d", w, i)] = "x"
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s, err := st.GetStream(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if s.RetentionHours != writers*each || len(s.Tags) != writers*each+1 {
		t.Fatalf("after %d concurrent updates: retention %d, %d tags", writers*each, s.RetentionHours, len(s.Tags))
	}
}

// testDeleteVersion: DeleteStream checks the version in the same step as it deletes.
func testDeleteVersion(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	want := appendN(t, st, "s", 3, 20)
	if err := st.DeleteStream(ctx, "s", "v0-wrong"); !errors.Is(err, store.ErrVersionMismatch) {
		t.Fatalf("delete with a wrong version: %v", err)
	}
	if s, err := st.GetStream(ctx, "s"); err != nil || s.Version != "v1-s" {
		t.Fatalf("after a refused delete: %+v, %v", s, err)
	}
	checkStored(t, st, "s", want)
	if _, err := st.UpdateStream(ctx, "s", func(s *store.Stream) error { s.Version = "v2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteStream(ctx, "s", "v1-s"); !errors.Is(err, store.ErrVersionMismatch) {
		t.Fatalf("delete with the version before an update: %v", err)
	}
	if err := st.DeleteStream(ctx, "s", "v2"); err != nil {
		t.Fatalf("delete with the current version: %v", err)
	}
	if _, err := st.GetStream(ctx, "s"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := st.DeleteStream(ctx, "s", "v2"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("delete with a version of a missing stream: %v", err)
	}
	// A stream with no version: "" deletes it, any version is a mismatch.
	if err := st.CreateStream(ctx, store.Stream{Name: "plain", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteStream(ctx, "plain", "v1"); !errors.Is(err, store.ErrVersionMismatch) {
		t.Fatalf("delete of an unversioned stream with a version: %v", err)
	}
	if err := st.DeleteStream(ctx, "plain", ""); err != nil {
		t.Fatal(err)
	}

	// Races: of deletes with the same version exactly one wins; an update that changes the version
	// and a delete with the old one never both succeed.
	for round := range 20 {
		name := fmt.Sprintf("race%d", round)
		mustCreate(t, st, name, 1)
		var wg sync.WaitGroup
		var mu sync.Mutex
		deleted, updated := 0, 0
		for range 4 {
			wg.Go(func() {
				err := st.DeleteStream(ctx, name, "v1-"+name)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					deleted++
				case errors.Is(err, store.ErrStreamNotFound), errors.Is(err, store.ErrVersionMismatch):
				default:
					t.Errorf("racing delete: %v", err)
				}
			})
		}
		wg.Go(func() {
			_, err := st.UpdateStream(ctx, name, func(s *store.Stream) error {
				if s.Version != "v1-"+name {
					return store.ErrVersionMismatch
				}
				s.Version = "v2"
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				updated++
			case errors.Is(err, store.ErrStreamNotFound):
			default:
				t.Errorf("racing update: %v", err)
			}
		})
		wg.Wait()
		_, err := st.GetStream(ctx, name)
		if deleted+updated != 1 || deleted > 1 || (deleted == 1) != errors.Is(err, store.ErrStreamNotFound) {
			t.Fatalf("round %d: %d deletes and %d updates succeeded, get: %v", round, deleted, updated, err)
		}
	}
}

func testDeleteRecreate(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "..", 24)
	mustCreate(t, st, "x", 24)
	old := appendN(t, st, "..", 5, 50)
	appendN(t, st, "x", 2, 50)
	if err := st.DeleteStream(ctx, "..", ""); err != nil {
		t.Fatal(err)
	}
	for _, m := range old {
		if _, err := st.Fragment(ctx, "..", m.Number); !errors.Is(err, store.ErrStreamNotFound) {
			t.Fatalf("deleted stream: fragment %d: %v", m.Number, err)
		}
	}
	mustCreate(t, st, "..", 24)
	if got, err := st.Range(ctx, "..", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("recreated stream sees %v, %v", numbers(got), err)
	}
	for _, m := range old {
		if _, err := st.Fragment(ctx, "..", m.Number); !errors.Is(err, store.ErrFragmentNotFound) {
			t.Fatalf("recreated stream: fragment %d: %v", m.Number, err)
		}
	}
	if _, err := st.First(ctx, ".."); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("recreated stream: First: %v", err)
	}
	m := appendOne(t, st, "..", base, base, 7)
	b, _ := readAll(t, st, "..", m.Number)
	if !bytes.Equal(b, payload("..", m.Number, 7)) {
		t.Fatal("recreated stream reads wrong bytes")
	}
	// Numbers are never handed out twice under one name: a continuation token or fragment
	// number kept from the deleted stream must name nothing of the new one.
	if last := old[len(old)-1].Number; m.Number <= last {
		t.Fatalf("recreated stream's first number %d, want one after the deleted stream's %d", m.Number, last)
	}
	if got, _ := st.Range(ctx, "x", 0, 0); len(got) != 2 {
		t.Fatalf("other stream lost data: %v", numbers(got))
	}
	// Deleted again before it hands out a number, then created again: still after them all.
	for range 2 {
		if err := st.DeleteStream(ctx, "..", ""); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, st, "..", 24)
	}
	if n, err := st.NextNumber(ctx, ".."); err != nil || n <= m.Number {
		t.Fatalf("stream created a third time: first number %d (%v), want one after %d", n, err, m.Number)
	}
}

func testMissing(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	errs := map[string]error{}
	_, errs["GetStream"] = st.GetStream(ctx, "nope")
	_, errs["UpdateStream"] = st.UpdateStream(ctx, "nope", func(*store.Stream) error { return nil })
	errs["DeleteStream"] = st.DeleteStream(ctx, "nope", "")
	errs["DeleteStream with version"] = st.DeleteStream(ctx, "nope", "v1")
	errs["Prepare"] = st.Prepare(ctx, "nope")
	_, errs["NextNumber"] = st.NextNumber(ctx, "nope")
	_, errs["AppendAsync"] = st.AppendAsync(ctx, "nope", store.FragmentMeta{Number: 1}, []byte("x"))
	errs["Append"] = store.Append(ctx, st, "nope", store.FragmentMeta{Number: 1}, []byte("x"))
	_, errs["Fragment"] = st.Fragment(ctx, "nope", 1)
	_, _, errs["Open"] = st.Open(ctx, "nope", 1)
	_, _, errs["AppendPayload"] = st.AppendPayload(ctx, "nope", 1, nil)
	_, errs["Range"] = st.Range(ctx, "nope", 0, 0)
	_, errs["TimeRange"] = st.TimeRange(ctx, "nope", store.ServerTime, base, base, store.Cursor{}, 0)
	_, errs["First"] = st.First(ctx, "nope")
	_, errs["Last"] = st.Last(ctx, "nope")
	for op, err := range errs {
		if !errors.Is(err, store.ErrStreamNotFound) {
			t.Errorf("%s on missing stream: %v", op, err)
		}
	}
	// An existing but empty stream.
	if _, err := st.First(ctx, "s"); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("First on empty: %v", err)
	}
	if _, err := st.Last(ctx, "s"); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("Last on empty: %v", err)
	}
	if _, err := st.Fragment(ctx, "s", 1); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("Fragment on empty: %v", err)
	}
	if _, _, err := st.Open(ctx, "s", 1); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("Open on empty: %v", err)
	}
	if _, _, err := st.AppendPayload(ctx, "s", 1, nil); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("AppendPayload on empty: %v", err)
	}
	if got, err := st.Range(ctx, "s", 0, 0); err != nil || len(got) != 0 {
		t.Errorf("Range on empty: %v, %v", got, err)
	}
	if got, err := st.TimeRange(ctx, "s", store.ServerTime, time.Time{}, base.Add(time.Hour), store.Cursor{}, 0); err != nil || len(got) != 0 {
		t.Errorf("TimeRange on empty: %v, %v", got, err)
	}
	if _, err := st.TimeRange(ctx, "s", store.TimeKind(7), base, base, store.Cursor{}, 0); err == nil {
		t.Errorf("TimeRange with a bad kind: no error")
	}
}

// testClosed: after Close every method returns ErrClosed, and Close itself returns nil.
func testClosed(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	m := appendOne(t, st, "s", base, base, 10)
	n, err := st.NextNumber(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	errs := map[string]error{}
	errs["CreateStream"] = st.CreateStream(ctx, store.Stream{Name: "t"})
	_, errs["GetStream"] = st.GetStream(ctx, "s")
	_, errs["ListStreams"] = st.ListStreams(ctx)
	_, errs["UpdateStream"] = st.UpdateStream(ctx, "s", func(*store.Stream) error { return nil })
	errs["DeleteStream"] = st.DeleteStream(ctx, "s", "")
	errs["Prepare"] = st.Prepare(ctx, "s")
	_, errs["NextNumber"] = st.NextNumber(ctx, "s")
	_, errs["AppendAsync"] = st.AppendAsync(ctx, "s", store.FragmentMeta{Number: n, ServerTime: base}, []byte("x"))
	_, errs["Fragment"] = st.Fragment(ctx, "s", m.Number)
	_, _, errs["Open"] = st.Open(ctx, "s", m.Number)
	_, _, errs["AppendPayload"] = st.AppendPayload(ctx, "s", m.Number, nil)
	_, errs["Range"] = st.Range(ctx, "s", 0, 0)
	_, errs["TimeRange"] = st.TimeRange(ctx, "s", store.ServerTime, time.Time{}, base, store.Cursor{}, 0)
	_, errs["First"] = st.First(ctx, "s")
	_, errs["Last"] = st.Last(ctx, "s")
	_, errs["EnforceRetention"] = st.EnforceRetention(ctx, base)
	errs["Ready"] = st.Ready(ctx)
	_, errs["Stats"] = st.Stats(ctx)
	for op, err := range errs {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v", op, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
