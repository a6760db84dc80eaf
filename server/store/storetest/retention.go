package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// stored returns the stream's fragments (Range) by number.
func stored(t testing.TB, st store.Store, stream string) map[uint64]store.FragmentMeta {
	t.Helper()
	ms, err := st.Range(context.Background(), stream, 0, 0)
	if err != nil {
		t.Fatalf("range %s: %v", stream, err)
	}
	out := map[uint64]store.FragmentMeta{}
	for _, m := range ms {
		out[m.Number] = m
	}
	return out
}

// enforce runs EnforceRetention at now and checks it against the contract: the count is what
// went, nothing at or after a stream's cutoff went (retention is never early), and what went is
// gone from every read.
func enforce(t testing.TB, st store.Store, now time.Time, streams ...string) int {
	t.Helper()
	ctx := context.Background()
	before := map[string]map[uint64]store.FragmentMeta{}
	for _, s := range streams {
		before[s] = stored(t, st, s)
	}
	n, err := st.EnforceRetention(ctx, now)
	if err != nil {
		t.Fatalf("retention at %v: %v", now, err)
	}
	gone := 0
	for _, s := range streams {
		info, err := st.GetStream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		cutoff := now.Add(-time.Duration(info.RetentionHours) * time.Hour)
		after := stored(t, st, s)
		for num, m := range before[s] {
			if _, ok := after[num]; ok {
				continue
			}
			gone++
			if !m.ServerTime.Before(cutoff) {
				t.Fatalf("retention at %v removed %s/%d (server time %v, cutoff %v)", now, s, num, m.ServerTime, cutoff)
			}
			checkGone(t, st, s, num)
		}
		if len(after) > len(before[s]) {
			t.Fatalf("retention added fragments to %s", s)
		}
	}
	if n != gone {
		t.Fatalf("retention at %v reported %d fragments deleted, %d went", now, n, gone)
	}
	return n
}

// checkGone checks that fragment num of stream is absent from every read by number.
func checkGone(t testing.TB, st store.Store, stream string, num uint64) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Fragment(ctx, stream, num); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("purged %s/%d: Fragment: %v", stream, num, err)
	}
	if _, _, err := st.Open(ctx, stream, num); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("purged %s/%d: Open: %v", stream, num, err)
	}
	if _, _, err := st.AppendPayload(ctx, stream, num, nil); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("purged %s/%d: AppendPayload: %v", stream, num, err)
	}
}

func testRetention(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "keep", 2)
	mustCreate(t, st, "short", 1)
	mustCreate(t, st, "mixed", 1)
	streams := []string{"keep", "short", "mixed"}
	keep := appendN(t, st, "keep", 5, 100)
	short := appendN(t, st, "short", 5, 100)
	mixedOld := appendN(t, st, "mixed", 3, 100)
	var mixedNew []store.FragmentMeta
	for i := range 3 {
		ts := base.Add(2*time.Hour + time.Duration(i)*time.Second)
		mixedNew = append(mixedNew, appendOne(t, st, "mixed", ts, ts, 100))
	}
	// A reader opened before the purge keeps reading.
	early, _, err := st.Open(ctx, "short", short[0].Number)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	// Nothing is old yet: the cutoff is base, and a fragment at the cutoff stays.
	if n := enforce(t, st, base.Add(time.Hour), streams...); n != 0 {
		t.Fatalf("early retention removed %d", n)
	}
	// Cutoff at short's last fragment: the store may take the older ones, never that one.
	enforce(t, st, base.Add(time.Hour+4*time.Second), streams...)
	if _, err := st.Fragment(ctx, "short", short[4].Number); err != nil {
		t.Fatalf("fragment at the cutoff: %v", err)
	}
	// A minute later every fragment of "short" is older than its hour: all go.
	enforce(t, st, base.Add(time.Hour+time.Minute), streams...)
	if got := stored(t, st, "short"); len(got) != 0 {
		t.Fatalf("short still has %d fragments", len(got))
	}
	if got, _ := st.TimeRange(ctx, "short", store.ServerTime, time.Time{}, base.Add(time.Hour), store.Cursor{}, 0); len(got) != 0 {
		t.Fatalf("purged fragments still in the server time index: %v", numbers(got))
	}
	if got, _ := st.TimeRange(ctx, "short", store.ProducerTime, time.Time{}, base.Add(time.Hour), store.Cursor{}, 0); len(got) != 0 {
		t.Fatalf("purged fragments still in the producer time index: %v", numbers(got))
	}
	if _, err := st.First(ctx, "short"); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("First of a purged stream: %v", err)
	}
	if _, err := st.Last(ctx, "short"); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("Last of a purged stream: %v", err)
	}
	if b, err := io.ReadAll(early); err != nil || !bytes.Equal(b, payload("short", short[0].Number, 100)) {
		t.Fatalf("reader opened before the purge: %d bytes, %v", len(b), err)
	}
	got, _ := st.Range(ctx, "keep", 0, 0)
	checkMetas(t, "keep", got, keep)
	// "mixed" may keep its expired fragments a while (FS: they share a segment with newer ones),
	// but its newer ones all stay.
	left := stored(t, st, "mixed")
	for _, m := range mixedNew {
		if _, ok := left[m.Number]; !ok {
			t.Fatalf("mixed lost fragment %d, which is not expired", m.Number)
		}
	}
	if len(left) > len(mixedOld)+len(mixedNew) {
		t.Fatalf("mixed has %d fragments", len(left))
	}

	// Numbers continue after a purge; the stream takes new fragments.
	m := appendOne(t, st, "short", base.Add(2*time.Hour), base, 10)
	if m.Number <= short[len(short)-1].Number {
		t.Fatalf("number %d reused after purge", m.Number)
	}
	if f, err := st.First(ctx, "short"); err != nil || f.Number != m.Number {
		t.Fatalf("First after purge: %+v, %v", f, err)
	}
	checkStored(t, st, "short", []store.FragmentMeta{m})

	// Retention lowered to 0: everything older than now goes.
	if _, err := st.UpdateStream(ctx, "keep", func(s *store.Stream) error { s.RetentionHours = 0; return nil }); err != nil {
		t.Fatal(err)
	}
	if n := enforce(t, st, base.Add(time.Minute), streams...); n != len(keep) {
		t.Fatalf("retention 0: removed %d, want %d", n, len(keep))
	}
	if got := stored(t, st, "keep"); len(got) != 0 {
		t.Fatalf("retention 0 left %d fragments", len(got))
	}
	// Far in the future everything expires, including the fragments of "mixed".
	enforce(t, st, base.Add(100*time.Hour), streams...)
	for _, s := range streams {
		if got := stored(t, st, s); len(got) != 0 {
			t.Fatalf("%s keeps %d fragments past every retention", s, len(got))
		}
	}
}
