package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// opener makes a fresh, empty store for one test; the test closes it.
type opener func(t *testing.T) Store

func openMem(t *testing.T) Store { return NewMem() }

// TestStore runs the behaviour suite over every implementation.
func TestStore(t *testing.T) {
	impls := []struct {
		name string
		open opener
	}{
		{"mem", openMem},
		{"fs", openTestFS},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			t.Run("Registry", func(t *testing.T) { testRegistry(t, impl.open(t)) })
			t.Run("Missing", func(t *testing.T) { testMissing(t, impl.open(t)) })
			t.Run("NextNumber", func(t *testing.T) { testNextNumber(t, impl.open(t)) })
			t.Run("AppendRead", func(t *testing.T) { testAppendRead(t, impl.open(t)) })
			t.Run("AppendErrors", func(t *testing.T) { testAppendErrors(t, impl.open(t)) })
			t.Run("TimeRange", func(t *testing.T) { testTimeRange(t, impl.open(t)) })
			t.Run("Retention", func(t *testing.T) { testRetention(t, impl.open(t)) })
			t.Run("DeleteRecreate", func(t *testing.T) { testDeleteRecreate(t, impl.open(t)) })
			t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, impl.open(t)) })
			t.Run("Closed", func(t *testing.T) { testClosed(t, impl.open(t)) })
		})
	}
}

var base = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustCreate(t testing.TB, st Store, name string, retentionHours int) {
	t.Helper()
	err := st.CreateStream(context.Background(), Stream{Name: name, RetentionHours: retentionHours, Status: "ACTIVE",
		CreationTime: base, Tags: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
}

// payload is deterministic record content for fragment n of a stream.
func payload(stream string, n uint64, size int) []byte {
	b := make([]byte, size)
	seed := uint32(n)*2654435761 + uint32(len(stream))
	for i := range b {
		seed = seed*1664525 + 1013904223
		b[i] = byte(seed >> 24)
	}
	return b
}

// appendOne reserves a number and appends a record with the given times.
func appendOne(t testing.TB, st Store, stream string, server, producer time.Time, size int) FragmentMeta {
	t.Helper()
	ctx := context.Background()
	n, err := st.NextNumber(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	m := FragmentMeta{Number: n, ServerTime: server, ProducerTime: producer, Duration: 2 * time.Second}
	if err := st.Append(ctx, stream, m, payload(stream, n, size)); err != nil {
		t.Fatalf("append %s/%d: %v", stream, n, err)
	}
	m.Size = int64(size)
	return m
}

// appendN appends n fragments one second apart in server time starting at base; producer time
// runs 10 s behind.
func appendN(t testing.TB, st Store, stream string, n int, size int) []FragmentMeta {
	t.Helper()
	var out []FragmentMeta
	for i := range n {
		ts := base.Add(time.Duration(i) * time.Second)
		out = append(out, appendOne(t, st, stream, ts, ts.Add(-10*time.Second), size))
	}
	return out
}

func metaEqual(a, b FragmentMeta) bool {
	return a.Number == b.Number && a.ServerTime.Equal(b.ServerTime) && a.ProducerTime.Equal(b.ProducerTime) &&
		a.Duration == b.Duration && a.Size == b.Size
}

func checkMetas(t testing.TB, what string, got, want []FragmentMeta) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d fragments %v, want %d %v", what, len(got), numbers(got), len(want), numbers(want))
	}
	for i := range got {
		if !metaEqual(got[i], want[i]) {
			t.Fatalf("%s: [%d] got %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

func numbers(ms []FragmentMeta) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Number)
	}
	return out
}

func readAll(t testing.TB, st Store, stream string, n uint64) ([]byte, FragmentMeta) {
	t.Helper()
	rc, m, err := st.Open(context.Background(), stream, n)
	if err != nil {
		t.Fatalf("open %s/%d: %v", stream, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s/%d: %v", stream, n, err)
	}
	return b, m
}

func testRegistry(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	if err := st.CreateStream(ctx, Stream{}); err == nil {
		t.Fatal("create with empty name: no error")
	}
	for _, name := range []string{"b", "..", "a", ".", "A-very_long.name"} {
		mustCreate(t, st, name, 24)
	}
	if err := st.CreateStream(ctx, Stream{Name: "a"}); !errors.Is(err, ErrStreamExists) {
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
	if s.Name != ".." || s.RetentionHours != 24 || !s.CreationTime.Equal(base) || s.Tags["k"] != "v" || s.Status != "ACTIVE" {
		t.Fatalf("get: %+v", s)
	}
	s.Tags["k"] = "changed" // a copy: must not leak into the store
	if s, _ := st.GetStream(ctx, ".."); s.Tags["k"] != "v" {
		t.Fatal("GetStream returned shared tags")
	}

	boom := errors.New("boom")
	if _, err := st.UpdateStream(ctx, "a", func(s *Stream) error { s.Version = "x"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update with failing fn: %v", err)
	}
	if s, _ := st.GetStream(ctx, "a"); s.Version != "" {
		t.Fatal("failed update changed the stream")
	}
	got, err := st.UpdateStream(ctx, "a", func(s *Stream) error {
		s.Version, s.RetentionHours, s.Tags["n"] = "v2", 48, "new"
		return nil
	})
	if err != nil || got.Version != "v2" || got.RetentionHours != 48 {
		t.Fatalf("update: %+v, %v", got, err)
	}
	if s, _ := st.GetStream(ctx, "a"); s.Version != "v2" || s.Tags["n"] != "new" || s.RetentionHours != 48 {
		t.Fatalf("after update: %+v", s)
	}
	if _, err := st.UpdateStream(ctx, "a", func(s *Stream) error { s.Name = "z"; return nil }); err == nil {
		t.Fatal("rename through update: no error")
	}
	if err := st.DeleteStream(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetStream(ctx, "b"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := st.DeleteStream(ctx, "b"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testMissing(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	errs := map[string]error{}
	_, errs["GetStream"] = st.GetStream(ctx, "nope")
	_, errs["UpdateStream"] = st.UpdateStream(ctx, "nope", func(*Stream) error { return nil })
	errs["DeleteStream"] = st.DeleteStream(ctx, "nope")
	_, errs["NextNumber"] = st.NextNumber(ctx, "nope")
	errs["Append"] = st.Append(ctx, "nope", FragmentMeta{Number: 1}, []byte("x"))
	_, errs["Fragment"] = st.Fragment(ctx, "nope", 1)
	_, _, errs["Open"] = st.Open(ctx, "nope", 1)
	_, errs["Range"] = st.Range(ctx, "nope", 0, 0)
	_, errs["TimeRange"] = st.TimeRange(ctx, "nope", ServerTime, base, base, Cursor{}, 0)
	_, errs["First"] = st.First(ctx, "nope")
	_, errs["Last"] = st.Last(ctx, "nope")
	for op, err := range errs {
		if !errors.Is(err, ErrStreamNotFound) {
			t.Errorf("%s on missing stream: %v", op, err)
		}
	}
	// An existing but empty stream.
	if _, err := st.First(ctx, "s"); !errors.Is(err, ErrFragmentNotFound) {
		t.Errorf("First on empty: %v", err)
	}
	if _, err := st.Last(ctx, "s"); !errors.Is(err, ErrFragmentNotFound) {
		t.Errorf("Last on empty: %v", err)
	}
	if _, err := st.Fragment(ctx, "s", 1); !errors.Is(err, ErrFragmentNotFound) {
		t.Errorf("Fragment on empty: %v", err)
	}
	if _, _, err := st.Open(ctx, "s", 1); !errors.Is(err, ErrFragmentNotFound) {
		t.Errorf("Open on empty: %v", err)
	}
	if got, err := st.Range(ctx, "s", 0, 0); err != nil || len(got) != 0 {
		t.Errorf("Range on empty: %v, %v", got, err)
	}
	if _, err := st.TimeRange(ctx, "s", TimeKind(7), base, base, Cursor{}, 0); err == nil {
		t.Errorf("TimeRange with a bad kind: no error")
	}
}

func testNextNumber(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "a", 1)
	mustCreate(t, st, "b", 1)
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			last := uint64(0)
			for range 300 {
				n, err := st.NextNumber(ctx, "a")
				if err != nil {
					t.Error(err)
					return
				}
				if n <= last {
					t.Errorf("not monotonic: %d after %d", n, last)
				}
				last = n
				mu.Lock()
				if seen[n] {
					t.Errorf("number %d handed out twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n, err := st.NextNumber(ctx, "b"); err != nil || n != 1 {
		t.Fatalf("first number of another stream: %d, %v", n, err)
	}
}

func testAppendRead(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	mustCreate(t, st, "other", 24)
	want := appendN(t, st, "s", 20, 1000)
	appendN(t, st, "other", 3, 10)
	// A gap: a reserved number that is never appended.
	if _, err := st.NextNumber(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	want = append(want, appendOne(t, st, "s", base.Add(time.Minute), base, 0)) // empty record

	for _, w := range want {
		got, err := st.Fragment(ctx, "s", w.Number)
		if err != nil || !metaEqual(got, w) {
			t.Fatalf("Fragment(%d) = %+v, %v; want %+v", w.Number, got, err, w)
		}
		b, m := readAll(t, st, "s", w.Number)
		if !metaEqual(m, w) || !bytes.Equal(b, payload("s", w.Number, int(w.Size))) {
			t.Fatalf("Open(%d): meta %+v, %d bytes", w.Number, m, len(b))
		}
		if m.ServerTime.Location() != time.UTC {
			t.Fatalf("times are not UTC: %v", m.ServerTime)
		}
	}
	gap := want[19].Number + 1
	if _, err := st.Fragment(ctx, "s", gap); !errors.Is(err, ErrFragmentNotFound) {
		t.Fatalf("Fragment(gap): %v", err)
	}
	all, err := st.Range(ctx, "s", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkMetas(t, "Range all", all, want)
	got, _ := st.Range(ctx, "s", want[5].Number, 4)
	checkMetas(t, "Range from 5 limit 4", got, want[5:9])
	got, _ = st.Range(ctx, "s", gap, 0)
	checkMetas(t, "Range from the gap", got, want[20:])
	got, _ = st.Range(ctx, "s", want[20].Number+1, 0)
	checkMetas(t, "Range past the end", got, nil)
	first, err := st.First(ctx, "s")
	if err != nil || !metaEqual(first, want[0]) {
		t.Fatalf("First: %+v, %v", first, err)
	}
	last, err := st.Last(ctx, "s")
	if err != nil || !metaEqual(last, want[20]) {
		t.Fatalf("Last: %+v, %v", last, err)
	}
	if o, _ := st.Range(ctx, "other", 0, 0); len(o) != 3 {
		t.Fatalf("other stream: %d fragments", len(o))
	}
}

func testAppendErrors(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	mustCreate(t, st, "zero", 0)
	n, _ := st.NextNumber(ctx, "zero")
	if err := st.Append(ctx, "zero", FragmentMeta{Number: n, ServerTime: base}, []byte("x")); !errors.Is(err, ErrNoRetention) {
		t.Fatalf("append to retention 0: %v", err)
	}
	if err := st.Append(ctx, "s", FragmentMeta{Number: 1, ServerTime: base}, []byte("x")); !errors.Is(err, ErrNumberOrder) {
		t.Fatalf("append with an unreserved number: %v", err)
	}
	n1, _ := st.NextNumber(ctx, "s")
	n2, _ := st.NextNumber(ctx, "s")
	if err := st.Append(ctx, "s", FragmentMeta{Number: n2, ServerTime: base}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.Append(ctx, "s", FragmentMeta{Number: n1, ServerTime: base}, []byte("x")); !errors.Is(err, ErrNumberOrder) {
		t.Fatalf("append going backwards: %v", err)
	}
	if err := st.Append(ctx, "s", FragmentMeta{Number: n2, ServerTime: base}, []byte("x")); !errors.Is(err, ErrNumberOrder) {
		t.Fatalf("append twice: %v", err)
	}
	if err := st.Append(ctx, "s", FragmentMeta{Number: 0, ServerTime: base}, []byte("x")); !errors.Is(err, ErrNumberOrder) {
		t.Fatalf("append number 0: %v", err)
	}
	if got, _ := st.Range(ctx, "s", 0, 0); len(got) != 1 {
		t.Fatalf("after failed appends: %v", numbers(got))
	}
}

func testTimeRange(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	// Server times: 0,1,1,1,2,...; producer times run backwards so the two orders differ.
	var all []FragmentMeta
	for i := range 12 {
		sec := i - 2
		if i < 4 {
			sec = min(i, 1)
		}
		server := base.Add(time.Duration(sec) * time.Second)
		producer := base.Add(-time.Duration(i) * time.Second)
		if i == 6 {
			producer = time.Time{} // unknown producer time sorts first
		}
		all = append(all, appendOne(t, st, "s", server, producer, 5))
	}
	sorted := func(kind TimeKind) []FragmentMeta {
		s := slices.Clone(all)
		slices.SortFunc(s, func(a, b FragmentMeta) int {
			ka, kb := metaTimeKey(a, kind), metaTimeKey(b, kind)
			switch {
			case ka.less(kb):
				return -1
			case kb.less(ka):
				return 1
			}
			return 0
		})
		return s
	}
	inRange := func(kind TimeKind, lo, hi time.Time) []FragmentMeta {
		var out []FragmentMeta
		for _, m := range sorted(kind) {
			ts := m.ServerTime
			if kind == ProducerTime {
				ts = m.ProducerTime
			}
			if !ts.Before(lo) && !ts.After(hi) {
				out = append(out, m)
			}
		}
		return out
	}
	far := base.Add(-time.Hour)
	tests := []struct {
		name   string
		kind   TimeKind
		lo, hi time.Time
	}{
		{"server all", ServerTime, far, base.Add(time.Hour)},
		{"server inclusive", ServerTime, base.Add(time.Second), base.Add(3 * time.Second)},
		{"server one instant", ServerTime, base.Add(time.Second), base.Add(time.Second)},
		{"server empty", ServerTime, base.Add(time.Hour), base.Add(2 * time.Hour)},
		{"server inverted", ServerTime, base.Add(3 * time.Second), base},
		{"producer all", ProducerTime, time.Time{}, base.Add(time.Hour)},
		{"producer inclusive", ProducerTime, base.Add(-5 * time.Second), base.Add(-2 * time.Second)},
		{"producer excluding unknown", ProducerTime, far, base},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := inRange(tc.kind, tc.lo, tc.hi)
			got, err := st.TimeRange(ctx, "s", tc.kind, tc.lo, tc.hi, Cursor{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkMetas(t, "no limit", got, want)
			for _, limit := range []int{1, 2, 5} {
				var pages []FragmentMeta
				var cur Cursor
				for range 100 {
					page, err := st.TimeRange(ctx, "s", tc.kind, tc.lo, tc.hi, cur, limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > limit {
						t.Fatalf("limit %d: page of %d", limit, len(page))
					}
					if len(page) == 0 {
						break
					}
					pages = append(pages, page...)
					l := page[len(page)-1]
					cur = Cursor{Time: l.ServerTime, Number: l.Number}
					if tc.kind == ProducerTime {
						cur.Time = l.ProducerTime
					}
				}
				checkMetas(t, fmt.Sprintf("pages of %d", limit), pages, want)
			}
		})
	}
}

func testRetention(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "keep", 2)
	mustCreate(t, st, "short", 1)
	keep := appendN(t, st, "keep", 5, 100)
	short := appendN(t, st, "short", 5, 100)
	// Nothing is old yet.
	n, err := st.EnforceRetention(ctx, base.Add(time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("early retention: %d, %v", n, err)
	}
	// One hour and a bit after the last fragment: everything in "short" is older than 1 h.
	n, err = st.EnforceRetention(ctx, base.Add(time.Hour+time.Minute))
	if err != nil || n != len(short) {
		t.Fatalf("retention: removed %d, %v; want %d", n, err, len(short))
	}
	if got, _ := st.Range(ctx, "short", 0, 0); len(got) != 0 {
		t.Fatalf("short still has %v", numbers(got))
	}
	if _, err := st.Fragment(ctx, "short", short[0].Number); !errors.Is(err, ErrFragmentNotFound) {
		t.Fatalf("purged fragment: %v", err)
	}
	if got, _ := st.TimeRange(ctx, "short", ServerTime, time.Time{}, base.Add(time.Hour), Cursor{}, 0); len(got) != 0 {
		t.Fatalf("purged fragments still in the time index: %v", numbers(got))
	}
	got, _ := st.Range(ctx, "keep", 0, 0)
	checkMetas(t, "keep", got, keep)
	// Numbers continue after a purge; the stream takes new fragments.
	m := appendOne(t, st, "short", base.Add(2*time.Hour), base, 10)
	if m.Number <= short[len(short)-1].Number {
		t.Fatalf("number %d reused after purge", m.Number)
	}
	if f, err := st.First(ctx, "short"); err != nil || f.Number != m.Number {
		t.Fatalf("First after purge: %+v, %v", f, err)
	}
	// Retention lowered to 0: everything older than now goes.
	if _, err := st.UpdateStream(ctx, "keep", func(s *Stream) error { s.RetentionHours = 0; return nil }); err != nil {
		t.Fatal(err)
	}
	n, err = st.EnforceRetention(ctx, base.Add(time.Minute))
	if err != nil || n != len(keep) {
		t.Fatalf("retention 0: removed %d, %v", n, err)
	}
}

func testDeleteRecreate(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	mustCreate(t, st, "..", 24)
	mustCreate(t, st, "x", 24)
	appendN(t, st, "..", 5, 50)
	appendN(t, st, "x", 2, 50)
	if err := st.DeleteStream(ctx, ".."); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, "..", 24)
	if got, err := st.Range(ctx, "..", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("recreated stream sees %v, %v", numbers(got), err)
	}
	if _, err := st.Fragment(ctx, "..", 1); !errors.Is(err, ErrFragmentNotFound) {
		t.Fatalf("recreated stream: fragment 1: %v", err)
	}
	m := appendOne(t, st, "..", base, base, 7)
	b, _ := readAll(t, st, "..", m.Number)
	if !bytes.Equal(b, payload("..", m.Number, 7)) {
		t.Fatal("recreated stream reads wrong bytes")
	}
	if got, _ := st.Range(ctx, "x", 0, 0); len(got) != 2 {
		t.Fatalf("other stream lost data: %v", numbers(got))
	}
}

func testConcurrent(t *testing.T, st Store) {
	defer st.Close()
	ctx := t.Context()
	const streams, perStream = 16, 12
	for i := range streams {
		mustCreate(t, st, fmt.Sprintf("s%d", i), 24)
	}
	var wg sync.WaitGroup
	for i := range streams {
		name := fmt.Sprintf("s%d", i)
		wg.Go(func() { // one writer per stream, as the server has
			for j := range perStream {
				ts := base.Add(time.Duration(j) * time.Second)
				appendOne(t, st, name, ts, ts, 100+j)
			}
		})
		wg.Go(func() { // and readers racing it
			for range perStream {
				ms, err := st.Range(ctx, name, 0, 0)
				if err != nil {
					t.Error(err)
					return
				}
				for _, m := range ms {
					b, _ := readAll(t, st, name, m.Number)
					if !bytes.Equal(b, payload(name, m.Number, int(m.Size))) {
						t.Errorf("%s/%d: wrong bytes", name, m.Number)
					}
				}
				if _, err := st.TimeRange(ctx, name, ServerTime, base, base.Add(time.Hour), Cursor{}, 3); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if _, err := st.ListStreams(ctx); err != nil {
				t.Error(err)
			}
			if _, err := st.EnforceRetention(ctx, base); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	for i := range streams {
		ms, err := st.Range(ctx, fmt.Sprintf("s%d", i), 0, 0)
		if err != nil || len(ms) != perStream {
			t.Fatalf("s%d: %d fragments, %v", i, len(ms), err)
		}
	}
}

func testClosed(t *testing.T, st Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetStream(ctx, "s"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetStream after Close: %v", err)
	}
	if err := st.Append(ctx, "s", FragmentMeta{Number: 1}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
}
