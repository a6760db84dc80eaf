package store

// Helpers for this package's own tests (FS specifics, benchmarks, fuzz seeds). The behaviour
// suite every Store passes is the storetest package, run from suite_test.go.

import (
	"context"
	"io"
	"testing"
	"time"
)

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
	if err := Append(ctx, st, stream, m, payload(stream, n, size)); err != nil {
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
