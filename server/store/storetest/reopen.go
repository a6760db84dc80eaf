package storetest

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// testReopenData: the registry and every acknowledged fragment survive a restart, and so do
// appends whose wait was never called: Close waits for appends in flight.
func testReopenData(t *testing.T, st store.Store, reopen func(*testing.T) store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "..", 24)
	mustCreate(t, st, "b", 48)
	mustCreate(t, st, "prepared", 1)
	want := appendN(t, st, "..", 10, 3000)
	wantB := appendN(t, st, "b", 2, 10)
	if _, err := st.UpdateStream(ctx, "b", func(s *store.Stream) error {
		s.Version, s.ARN, s.DeviceName, s.MediaType, s.KmsKeyID = "v9", "arn:b", "dev", "video/h264", "key"
		s.Tags["more"] = "tags"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Prepare(ctx, "prepared"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // in flight at Close
		n, err := st.NextNumber(ctx, "..")
		if err != nil {
			t.Fatal(err)
		}
		ts := base.Add(time.Minute + time.Duration(i)*time.Second)
		m := store.FragmentMeta{Number: n, ServerTime: ts, ProducerTime: ts, Duration: time.Second}
		if _, err := st.AppendAsync(ctx, "..", m, payload("..", n, 700)); err != nil {
			t.Fatal(err)
		}
		m.Size = 700
		want = append(want, m)
	}
	streamsBefore, err := st.ListStreams(ctx)
	if err != nil {
		t.Fatal(err)
	}

	st = restart(t, st, reopen)
	streamsAfter, err := st.ListStreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(streamsAfter) != len(streamsBefore) {
		t.Fatalf("registry after reopen: %+v, want %+v", streamsAfter, streamsBefore)
	}
	for i, s := range streamsAfter {
		w := streamsBefore[i]
		if s.Name != w.Name || s.ARN != w.ARN || s.Version != w.Version || s.DeviceName != w.DeviceName ||
			s.MediaType != w.MediaType || s.KmsKeyID != w.KmsKeyID || s.Status != w.Status ||
			!s.CreationTime.Equal(w.CreationTime) || s.RetentionHours != w.RetentionHours || !maps.Equal(s.Tags, w.Tags) {
			t.Fatalf("stream after reopen: %+v, want %+v", s, w)
		}
	}
	got, err := st.Range(ctx, "..", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkMetas(t, "after reopen", got, want)
	checkStored(t, st, "..", want)
	checkStored(t, st, "b", wantB)
	if tr, err := st.TimeRange(ctx, "..", store.ProducerTime, time.Time{}, base.Add(time.Hour), store.Cursor{}, 0); err != nil || len(tr) != len(want) {
		t.Fatalf("TimeRange after reopen: %d fragments, %v", len(tr), err)
	}
	if got, err := st.Range(ctx, "prepared", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("prepared stream after reopen: %v, %v", numbers(got), err)
	}
	// Appends go on where they were.
	m := appendOne(t, st, "..", base.Add(time.Hour), base, 5)
	if last, _ := st.Last(ctx, ".."); last.Number != m.Number || m.Number <= want[len(want)-1].Number {
		t.Fatalf("append after reopen: number %d, Last %d, previous %d", m.Number, last.Number, want[len(want)-1].Number)
	}
	if first, _ := st.First(ctx, ".."); first.Number != want[0].Number {
		t.Fatalf("First after reopen: %d", first.Number)
	}
	if err := st.Prepare(ctx, "prepared"); err != nil {
		t.Fatal(err)
	}
	checkStored(t, st, "prepared", []store.FragmentMeta{appendOne(t, st, "prepared", base, base, 10)})
}

// testReopenNumbers: a reserved number is never handed out again, also across several restarts,
// whether or not it was appended.
func testReopenNumbers(t *testing.T, st store.Store, reopen func(*testing.T) store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	var high uint64
	seen := map[uint64]bool{}
	for cycle := range 3 {
		for i := range 5 {
			n, err := st.NextNumber(ctx, "s")
			if err != nil {
				t.Fatal(err)
			}
			if n <= high || seen[n] {
				t.Fatalf("cycle %d: number %d handed out after %d", cycle, n, high)
			}
			seen[n], high = true, n
			if i == 2 {
				m := store.FragmentMeta{Number: n, ServerTime: base.Add(time.Duration(n) * time.Second)}
				if err := store.Append(ctx, st, "s", m, payload("s", n, 10)); err != nil {
					t.Fatal(err)
				}
			}
		}
		st = restart(t, st, reopen)
	}
	got, err := st.Range(ctx, "s", 0, 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("after 3 restarts: %v, %v; want one fragment per cycle", numbers(got), err)
	}
	if n, err := st.NextNumber(ctx, "s"); err != nil || n <= high {
		t.Fatalf("after restarts: number %d, %v; had reserved up to %d", n, err, high)
	}
}

// testReopenRetention: purged fragments stay purged after a restart and their numbers are not
// handed out again.
func testReopenRetention(t *testing.T, st store.Store, reopen func(*testing.T) store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	old := appendN(t, st, "s", 4, 50)
	if n := enforce(t, st, base.Add(2*time.Hour), "s"); n != len(old) {
		t.Fatalf("retention removed %d, want %d", n, len(old))
	}
	st = restart(t, st, reopen)
	if got, err := st.Range(ctx, "s", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("purged fragments after reopen: %v, %v", numbers(got), err)
	}
	for _, m := range old {
		checkGone(t, st, "s", m.Number)
	}
	m := appendOne(t, st, "s", base.Add(3*time.Hour), base, 10)
	if m.Number <= old[len(old)-1].Number {
		t.Fatalf("number %d reused after a purge and a restart (last purged %d)", m.Number, old[len(old)-1].Number)
	}
	checkStored(t, st, "s", []store.FragmentMeta{m})
}

// testReopenDelete: a deleted stream stays deleted after a restart, and one created again under
// its name does not see the old data.
func testReopenDelete(t *testing.T, st store.Store, reopen func(*testing.T) store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "gone", 24)
	mustCreate(t, st, "again", 24)
	mustCreate(t, st, "kept", 24)
	appendN(t, st, "gone", 3, 40)
	old := appendN(t, st, "again", 3, 40)
	kept := appendN(t, st, "kept", 2, 40)
	for _, name := range []string{"gone", "again"} {
		if err := st.DeleteStream(ctx, name, "v1-"+name); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, st, "again", 24)
	st = restart(t, st, reopen)
	if _, err := st.GetStream(ctx, "gone"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("deleted stream after reopen: %v", err)
	}
	if _, err := st.Range(ctx, "gone", 0, 0); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("Range of a deleted stream after reopen: %v", err)
	}
	for _, m := range old {
		if _, err := st.Fragment(ctx, "again", m.Number); !errors.Is(err, store.ErrFragmentNotFound) {
			t.Fatalf("re-created stream sees old fragment %d after reopen: %v", m.Number, err)
		}
	}
	checkStored(t, st, "kept", kept)
	m := appendOne(t, st, "again", base, base, 9)
	checkStored(t, st, "again", []store.FragmentMeta{m})
	if last := old[len(old)-1].Number; m.Number <= last {
		t.Fatalf("re-created stream's first number after reopen %d, want one after the deleted stream's %d", m.Number, last)
	}
}
