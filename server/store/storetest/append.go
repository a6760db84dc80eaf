package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/record"
	"github.com/openkvs/kvs/server/store"
)

func testNextNumber(t *testing.T, st store.Store) {
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
	if seen[0] {
		t.Error("number 0 handed out")
	}
	if n, err := st.NextNumber(ctx, "b"); err != nil || n != 1 {
		t.Fatalf("first number of another stream: %d, %v", n, err)
	}
}

func testAppendRead(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	mustCreate(t, st, "other", 24)
	var want []store.FragmentMeta
	for i := range 20 {
		// Millisecond timestamps, the precision the server stores.
		ts := base.Add(time.Duration(i)*time.Second + time.Duration(i*37)*time.Millisecond)
		want = append(want, appendOne(t, st, "s", ts, ts.Add(-10*time.Second), 1000+i))
	}
	appendN(t, st, "other", 3, 10)
	// A gap: a reserved number that is never appended.
	if _, err := st.NextNumber(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	want = append(want, appendOne(t, st, "s", base.Add(time.Minute), time.Time{}, 0)) // empty record, unknown producer time

	checkStored(t, st, "s", want)
	for _, w := range want {
		m, _ := st.Fragment(ctx, "s", w.Number)
		if m.ServerTime.Location() != time.UTC || (!m.ProducerTime.IsZero() && m.ProducerTime.Location() != time.UTC) {
			t.Fatalf("times are not UTC: %v, %v", m.ServerTime, m.ProducerTime)
		}
	}
	gap := want[19].Number + 1
	if _, err := st.Fragment(ctx, "s", gap); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("Fragment(gap): %v", err)
	}
	if _, _, err := st.Open(ctx, "s", gap); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("Open(gap): %v", err)
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
	got, _ = st.Range(ctx, "s", 0, -1)
	checkMetas(t, "Range with a negative limit", got, want)
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
	// The store keeps no reference to the appended bytes.
	n, _ := st.NextNumber(ctx, "s")
	data := payload("s", n, 100)
	if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n, ServerTime: base.Add(2 * time.Minute)}, data); err != nil {
		t.Fatal(err)
	}
	clear(data)
	if b, _ := readAll(t, st, "s", n); !bytes.Equal(b, payload("s", n, 100)) {
		t.Fatal("the stored record changed with the caller's buffer")
	}
}

// testAppendErrors: refusals come from AppendAsync itself (wait is nil), store nothing and leave
// the stream's number order as it was.
func testAppendErrors(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	mustCreate(t, st, "zero", 0)
	refusedCtx := func(ctx context.Context, what string, stream string, meta store.FragmentMeta, data []byte, want error) {
		t.Helper()
		wait, err := st.AppendAsync(ctx, stream, meta, data)
		if !errors.Is(err, want) || wait != nil {
			t.Fatalf("%s: AppendAsync returned %v (wait set: %t), want %v", what, err, wait != nil, want)
		}
		if err := store.Append(ctx, st, stream, meta, data); !errors.Is(err, want) {
			t.Fatalf("%s: Append returned %v, want %v", what, err, want)
		}
	}
	refused := func(what string, stream string, meta store.FragmentMeta, data []byte, want error) {
		t.Helper()
		refusedCtx(ctx, what, stream, meta, data, want)
	}
	n, _ := st.NextNumber(ctx, "zero")
	refused("retention 0", "zero", store.FragmentMeta{Number: n, ServerTime: base}, []byte("x"), store.ErrNoRetention)
	refused("missing stream", "nope", store.FragmentMeta{Number: 1, ServerTime: base}, []byte("x"), store.ErrStreamNotFound)
	refused("unreserved number", "s", store.FragmentMeta{Number: 1, ServerTime: base}, []byte("x"), store.ErrNumberOrder)
	n1, _ := st.NextNumber(ctx, "s")
	n2, _ := st.NextNumber(ctx, "s")
	n3, _ := st.NextNumber(ctx, "s")
	refused("record too large", "s", store.FragmentMeta{Number: n2, ServerTime: base}, make([]byte, store.MaxRecordSize+1), store.ErrRecordTooLarge)
	refused("number 0", "s", store.FragmentMeta{Number: 0, ServerTime: base}, []byte("x"), store.ErrNumberOrder)
	// The refused n2 is still free: nothing about it was stored.
	if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n2, ServerTime: base}, []byte("x")); err != nil {
		t.Fatalf("append after refusals: %v", err)
	}
	refused("going backwards", "s", store.FragmentMeta{Number: n1, ServerTime: base}, []byte("x"), store.ErrNumberOrder)
	refused("appending twice", "s", store.FragmentMeta{Number: n2, ServerTime: base}, []byte("x"), store.ErrNumberOrder)
	refused("number not reserved yet", "s", store.FragmentMeta{Number: n3 + 1, ServerTime: base}, []byte("x"), store.ErrNumberOrder)
	// A ctx that has ended: the append does not happen.
	done, cancel := context.WithCancel(ctx)
	cancel()
	refusedCtx(done, "cancelled ctx", "s", store.FragmentMeta{Number: n3, ServerTime: base}, []byte("x"), context.Canceled)
	if got, _ := st.Range(ctx, "s", 0, 0); len(got) != 1 || got[0].Number != n2 {
		t.Fatalf("after refused appends: %v, want only %d", numbers(got), n2)
	}
	if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n3, ServerTime: base}, []byte("y")); err != nil {
		t.Fatalf("append of the number the cancelled append had: %v", err)
	}
	if got, _ := st.Range(ctx, "zero", 0, 0); len(got) != 0 {
		t.Fatalf("retention-0 stream stored %v", numbers(got))
	}
}

// testAppendAsync: several appends of one stream in flight before any wait; every wait returns
// nil, a wait returning means the earlier fragments are durable too, and a fragment readable
// before its wait returned is already whole.
func testAppendAsync(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	const inFlight = 6
	var waits []func(context.Context) error
	var want []store.FragmentMeta
	for i := range inFlight {
		n, err := st.NextNumber(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		ts := base.Add(time.Duration(i) * time.Second)
		m := store.FragmentMeta{Number: n, ServerTime: ts, ProducerTime: ts.Add(-time.Second), Duration: time.Second, Size: 1}
		wait, err := st.AppendAsync(ctx, "s", m, payload("s", n, 2000+i))
		if err != nil {
			t.Fatalf("AppendAsync %d: %v", i, err)
		}
		if wait == nil {
			t.Fatalf("AppendAsync %d: nil wait", i)
		}
		m.Size = int64(2000 + i) // stored size is len(data), whatever meta.Size said
		waits, want = append(waits, wait), append(want, m)
	}
	// Whatever is visible before its wait is whole.
	for _, w := range want {
		m, err := st.Fragment(ctx, "s", w.Number)
		switch {
		case errors.Is(err, store.ErrFragmentNotFound):
		case err != nil:
			t.Fatalf("Fragment(%d) before wait: %v", w.Number, err)
		case !metaEqual(m, w):
			t.Fatalf("Fragment(%d) before wait: %+v, want %+v", w.Number, m, w)
		default:
			if b, _, err := st.AppendPayload(ctx, "s", w.Number, nil); err == nil && !bytes.Equal(b, payload("s", w.Number, int(w.Size))) {
				t.Fatalf("fragment %d before wait: %d bytes, not the record", w.Number, len(b))
			}
		}
	}
	// Waiting for the last one alone makes all of them durable and readable: waits complete in
	// append order.
	if err := waits[inFlight-1](ctx); err != nil {
		t.Fatalf("wait %d: %v", inFlight-1, err)
	}
	got, err := st.Range(ctx, "s", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkMetas(t, "after the last wait", got, want)
	checkStored(t, st, "s", want)
	for i, wait := range waits[:inFlight-1] {
		if err := wait(ctx); err != nil {
			t.Fatalf("wait %d after the last one returned: %v", i, err)
		}
	}
	if last, err := st.Last(ctx, "s"); err != nil || !metaEqual(last, want[inFlight-1]) {
		t.Fatalf("Last: %+v, %v", last, err)
	}
	// The next append goes on after them; AppendAsync through store.Append.
	m := appendOne(t, st, "s", base.Add(time.Hour), base, 5)
	if m.Number <= want[inFlight-1].Number {
		t.Fatalf("number %d after %d", m.Number, want[inFlight-1].Number)
	}
}

// testAppendPayload: AppendPayload appends to the caller's buffer what Open returns, and leaves
// the buffer as it was on error.
func testAppendPayload(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	ms := appendN(t, st, "s", 3, 3000)
	ms = append(ms, appendOne(t, st, "s", base.Add(time.Hour), base, 0))
	buf := []byte("head")
	for _, m := range ms {
		data, want := readAll(t, st, "s", m.Number)
		got, meta, err := st.AppendPayload(ctx, "s", m.Number, buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:4]) != "head" || !bytes.Equal(got[len(buf):], data) || !metaEqual(meta, want) {
			t.Fatalf("fragment %d: AppendPayload gave %d bytes, meta %+v; Open %d bytes, meta %+v", m.Number, len(got)-len(buf), meta, len(data), want)
		}
		buf = got
	}
	// Spare capacity is used, not required.
	roomy := make([]byte, 2, 2+3000)
	got, _, err := st.AppendPayload(ctx, "s", ms[0].Number, roomy)
	if err != nil || len(got) != 3002 || !bytes.Equal(got[2:], payload("s", ms[0].Number, 3000)) {
		t.Fatalf("AppendPayload into spare capacity: %d bytes, %v", len(got), err)
	}
	for _, tc := range []struct {
		name   string
		stream string
		number uint64
		want   error
	}{
		{"missing fragment", "s", ms[3].Number + 1, store.ErrFragmentNotFound},
		{"missing stream", "nope", 1, store.ErrStreamNotFound},
	} {
		prefix := []byte("keep")
		b, _, err := st.AppendPayload(ctx, tc.stream, tc.number, prefix)
		if !errors.Is(err, tc.want) || string(b) != "keep" {
			t.Fatalf("%s: %v, buffer %q; want %v and the buffer unchanged", tc.name, err, b, tc.want)
		}
	}
}

// testPrepare: Prepare is allowed before anything, any number of times, changes nothing readers
// see, and knows missing streams.
func testPrepare(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 1)
	mustCreate(t, st, "live", 0)
	mustCreate(t, st, "idle", 1)
	for range 3 {
		if err := st.Prepare(ctx, "s"); err != nil {
			t.Fatalf("Prepare: %v", err)
		}
	}
	if got, err := st.Range(ctx, "s", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("Prepare stored %v, %v", numbers(got), err)
	}
	if _, err := st.First(ctx, "s"); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Fatalf("First after Prepare: %v", err)
	}
	if n, err := st.NextNumber(ctx, "s"); err != nil || n != 1 {
		t.Fatalf("first number after Prepare: %d, %v", n, err)
	}
	m1 := appendOne(t, st, "s", base, base, 100)
	if err := st.Prepare(ctx, "s"); err != nil { // between appends
		t.Fatal(err)
	}
	m2 := appendOne(t, st, "s", base.Add(time.Second), base, 100)
	checkStored(t, st, "s", []store.FragmentMeta{m1, m2})
	if err := st.Prepare(ctx, "live"); err != nil {
		t.Fatalf("Prepare of a stream without retention: %v", err)
	}
	n, _ := st.NextNumber(ctx, "live")
	if _, err := st.AppendAsync(ctx, "live", store.FragmentMeta{Number: n, ServerTime: base}, []byte("x")); !errors.Is(err, store.ErrNoRetention) {
		t.Fatalf("append to a prepared stream without retention: %v", err)
	}
	if err := st.Prepare(ctx, "idle"); err != nil { // prepared, never written, then deleted
		t.Fatal(err)
	}
	if err := st.DeleteStream(ctx, "idle", ""); err != nil {
		t.Fatalf("delete of a prepared stream: %v", err)
	}
	if err := st.Prepare(ctx, "idle"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("Prepare of a deleted stream: %v", err)
	}
	if err := st.Prepare(ctx, "nope"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("Prepare of a missing stream: %v", err)
	}
}

// testConcurrent: one writer per stream (as the server has) and readers racing them, on many
// streams at once.
func testConcurrent(t *testing.T, st store.Store) {
	ctx := t.Context()
	const streams, perStream = 16, 12
	names := createStreams(t, st, streams)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			for j := range perStream {
				ts := base.Add(time.Duration(j) * time.Second)
				appendOne(t, st, name, ts, ts, 100+j)
			}
		})
		wg.Go(func() { raceReads(t, st, name, perStream) })
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
	for _, name := range names {
		ms, err := st.Range(ctx, name, 0, 0)
		if err != nil || len(ms) != perStream {
			t.Fatalf("%s: %d fragments, %v", name, len(ms), err)
		}
	}
}

// createStreams creates n streams with retention, s0 to s(n-1), and returns their names.
func createStreams(t *testing.T, st store.Store, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("s%d", i)
		mustCreate(t, st, names[i], 24)
	}
	return names
}

// raceReads reads stream name while it is written: whatever it finds must be whole.
func raceReads(t *testing.T, st store.Store, name string, rounds int) {
	ctx := context.Background()
	for range rounds {
		ms, err := st.Range(ctx, name, 0, 0)
		if err != nil {
			t.Error(err)
			return
		}
		for _, m := range ms {
			b, _, err := st.AppendPayload(ctx, name, m.Number, nil)
			if err != nil || !bytes.Equal(b, payload(name, m.Number, int(m.Size))) {
				t.Errorf("%s/%d: %d bytes, %v", name, m.Number, len(b), err)
			}
		}
		if _, err := st.TimeRange(ctx, name, store.ServerTime, base, base.Add(time.Hour), store.Cursor{}, 3); err != nil {
			t.Error(err)
		}
	}
}

// testConcurrentAsync: writers on different streams, each keeping several appends in flight
// (the PutMedia persister's pattern), with readers racing them.
func testConcurrentAsync(t *testing.T, st store.Store) {
	ctx := t.Context()
	const streams, perStream, inFlight = 8, 16, 4
	names := createStreams(t, st, streams)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			pending := make(chan func(context.Context) error, inFlight)
			done := make(chan struct{})
			go func() { // waits in order, as the acker does
				defer close(done)
				for wait := range pending {
					if err := wait(ctx); err != nil {
						t.Errorf("%s: wait: %v", name, err)
					}
				}
			}()
			defer func() { close(pending); <-done }()
			for j := range perStream {
				n, err := st.NextNumber(ctx, name)
				if err != nil {
					t.Error(err)
					return
				}
				ts := base.Add(time.Duration(j) * time.Second)
				wait, err := st.AppendAsync(ctx, name, store.FragmentMeta{Number: n, ServerTime: ts, ProducerTime: ts}, payload(name, n, 500+j))
				if err != nil {
					t.Errorf("%s: AppendAsync %d: %v", name, n, err)
					return
				}
				pending <- wait
			}
		})
		wg.Go(func() { raceReads(t, st, name, perStream) })
	}
	wg.Wait()
	for _, name := range names {
		ms, err := st.Range(ctx, name, 0, 0)
		if err != nil || len(ms) != perStream {
			t.Fatalf("%s: %d fragments, %v", name, len(ms), err)
		}
		for j, m := range ms {
			if m.Size != int64(500+j) {
				t.Fatalf("%s: fragment %d has %d bytes, want %d", name, m.Number, m.Size, 500+j)
			}
		}
	}
}

// testAppendChecksum appends with the payload's CRC-32C given in the meta (as the server does):
// the payloads read back whole (a store that keeps the checksum verifies it on reads), and reads
// return Checksum 0.
func testAppendChecksum(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, "s", 24)
	var want []store.FragmentMeta
	for i, size := range []int{1, 1000, 300_000} {
		n, err := st.NextNumber(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		data := payload("s", n, size)
		ts := base.Add(time.Duration(i) * time.Second)
		m := store.FragmentMeta{Number: n, ServerTime: ts, ProducerTime: ts, Duration: time.Second,
			Checksum: crc32.Checksum(data, record.Castagnoli)}
		if err := store.Append(ctx, st, "s", m, data); err != nil {
			t.Fatalf("append with its checksum: %v", err)
		}
		m.Size, m.Checksum = int64(size), 0
		want = append(want, m)
	}
	checkStored(t, st, "s", want)
}
