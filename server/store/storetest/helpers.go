package storetest

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// base is the server time of the suite's first fragments.
var base = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustCreate(t testing.TB, st store.Store, name string, retentionHours int) {
	t.Helper()
	err := st.CreateStream(context.Background(), store.Stream{Name: name, RetentionHours: retentionHours, Status: "ACTIVE",
		CreationTime: base, Version: "v1-" + name, Tags: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
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

// appendOne reserves a number and appends a record of size bytes with the given times (through
// store.Append: AppendAsync and its wait). It returns the meta the store should report.
func appendOne(t testing.TB, st store.Store, stream string, server, producer time.Time, size int) store.FragmentMeta {
	t.Helper()
	ctx := context.Background()
	n, err := st.NextNumber(ctx, stream)
	if err != nil {
		t.Fatalf("next number %s: %v", stream, err)
	}
	m := store.FragmentMeta{Number: n, ServerTime: server, ProducerTime: producer, Duration: 2 * time.Second}
	if err := store.Append(ctx, st, stream, m, payload(stream, n, size)); err != nil {
		t.Fatalf("append %s/%d: %v", stream, n, err)
	}
	m.Size = int64(size)
	return m
}

// appendN appends n fragments one second apart in server time starting at base; producer time
// runs 10 s behind.
func appendN(t testing.TB, st store.Store, stream string, n int, size int) []store.FragmentMeta {
	t.Helper()
	var out []store.FragmentMeta
	for i := range n {
		ts := base.Add(time.Duration(i) * time.Second)
		out = append(out, appendOne(t, st, stream, ts, ts.Add(-10*time.Second), size))
	}
	return out
}

func metaEqual(a, b store.FragmentMeta) bool {
	return a.Number == b.Number && a.ServerTime.Equal(b.ServerTime) && a.ProducerTime.Equal(b.ProducerTime) &&
		a.Duration == b.Duration && a.Size == b.Size && a.Checksum == b.Checksum
}

func checkMetas(t testing.TB, what string, got, want []store.FragmentMeta) {
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

func numbers(ms []store.FragmentMeta) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Number)
	}
	return out
}

// readAll reads fragment n with Open and checks that the reader's meta is the fragment's.
func readAll(t testing.TB, st store.Store, stream string, n uint64) ([]byte, store.FragmentMeta) {
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
	if m.Number != n {
		t.Fatalf("open %s/%d: meta of fragment %d", stream, n, m.Number)
	}
	return b, m
}

// checkStored checks that every fragment in want is readable, through each read method, with its
// meta and payload(stream, number, size) as content.
func checkStored(t testing.TB, st store.Store, stream string, want []store.FragmentMeta) {
	t.Helper()
	ctx := context.Background()
	for _, w := range want {
		got, err := st.Fragment(ctx, stream, w.Number)
		if err != nil || !metaEqual(got, w) {
			t.Fatalf("Fragment(%s/%d) = %+v, %v; want %+v", stream, w.Number, got, err, w)
		}
		b, m := readAll(t, st, stream, w.Number)
		if !metaEqual(m, w) || !bytes.Equal(b, payload(stream, w.Number, int(w.Size))) {
			t.Fatalf("Open(%s/%d): meta %+v, %d bytes; want %+v", stream, w.Number, m, len(b), w)
		}
		pb, pm, err := st.AppendPayload(ctx, stream, w.Number, nil)
		if err != nil || !metaEqual(pm, w) || !bytes.Equal(pb, b) {
			t.Fatalf("AppendPayload(%s/%d): meta %+v, %d bytes, %v; want what Open gives", stream, w.Number, pm, len(pb), err)
		}
	}
}

// timeOf returns the kind timestamp of m.
func timeOf(m store.FragmentMeta, kind store.TimeKind) time.Time {
	if kind == store.ProducerTime {
		return m.ProducerTime
	}
	return m.ServerTime
}

// timeOrder is TimeRange's order: by the kind timestamp (the zero time first), then number.
func timeOrder(kind store.TimeKind) func(a, b store.FragmentMeta) int {
	return func(a, b store.FragmentMeta) int {
		if c := timeOf(a, kind).Compare(timeOf(b, kind)); c != 0 {
			return c
		}
		switch {
		case a.Number < b.Number:
			return -1
		case a.Number > b.Number:
			return 1
		}
		return 0
	}
}
