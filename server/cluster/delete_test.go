package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// TestDeleteStreamManyRows: deleting a stream of many fragment rows answers at once and leaves
// the rows to the cleanup, which deletes them in steps. DeleteStream was one statement whose
// ON DELETE CASCADE deleted every fragment row of the stream under bound's UnavailableWait: past
// a few million rows (10 s) it failed with ErrUnavailable (a 503 the AWS CLI and SDKs retry, each
// retry failing the same way, the stream whole) and the stream could never be deleted. Scaled
// down: 500,000 rows against a node whose every statement must end within 100 ms
// (statement_timeout, and an UnavailableWait of 100 ms). One DELETE of them does not meet it
// (measured here: 240 ms for 395,000 rows just inserted, so cached; 2 M rows took 2.5 s by hand),
// and a step of 1,000 rows easily does (500 steps in 2-5 s here beside other tests, 4-10 ms
// each; a step of 5,000, the table not yet analyzed, once ran past 100 ms beside other tests).
func TestDeleteStreamManyRows(t *testing.T) {
	t.Parallel()
	const rows = 500_000
	a, b := tightNode(t, rows, store.Stream{Name: "s", RetentionHours: 24})
	ctx := t.Context()
	if _, err := a.pool.Exec(ctx, `UPDATE kvs_streams SET number_hwm = $1 WHERE name = 's'`, rows+1000); err != nil {
		t.Fatal(err)
	}

	if err := b.DeleteStream(ctx, "s", ""); err != nil {
		t.Fatalf("deleting a stream of %d fragments: %v", rows, err)
	}
	if _, err := b.GetStream(ctx, "s"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("the deleted stream: %v, want ErrStreamNotFound", err)
	}
	// Created again under its name: none of the old rows, numbers above the old ones.
	if err := b.CreateStream(ctx, store.Stream{Name: "s", RetentionHours: 24}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Range(ctx, "s", 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("the new stream s: %d fragments, %v; want none of the deleted one's", len(got), err)
	}
	if n, err := b.NextNumber(ctx, "s"); err != nil || n <= rows+1000 {
		t.Fatalf("the new stream's first number: %d, %v; want above the deleted one's %d", n, err, rows+1000)
	}
	if st, err := b.Stats(ctx); err != nil || st.Fragments != 0 {
		t.Errorf("stats after the delete: %+v, %v; want no fragments", st, err)
	}
	// The cleanup deletes the rows in steps, each within the node's bounds.
	start := time.Now()
	for pass := 0; ; pass++ {
		if _, err := b.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil {
			t.Fatalf("cleanup pass %d: %v", pass, err)
		}
		var left int
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM kvs_fragments`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			t.Logf("the cleanup deleted %d rows in steps of %d in %v", rows, b.purgeRows, time.Since(start))
			break
		}
		if pass == 2 {
			t.Fatalf("%d rows of the deleted stream left after 3 passes", left)
		}
	}
}

// TestStreamCapManyRows: a kvs:max-bytes cap lowered far below what a stream of many rows holds
// is applied in steps. applyCaps deleted every row over the cap in one window-function DELETE
// inside the pass's last transaction: past some tens of millions of rows (the pass's 30 s +
// UnavailableWait, sooner under a statement_timeout) it failed on every pass, and with it the
// deletion of every unreferenced object of the cluster. Scaled down as TestDeleteStreamManyRows:
// 500,000 rows of 10 bytes capped to 1000 bytes on a node whose statements must end within
// 100 ms: the one DELETE took 2.3 s here; the 500 steps of 1,000 about 6 ms each, and finding
// the cut (the 101 newest rows by the primary key) well under 1 ms.
func TestStreamCapManyRows(t *testing.T) {
	t.Parallel()
	const rows = 500_000
	a, b := tightNode(t, rows, store.Stream{Name: "s", RetentionHours: 24 * 365, Tags: map[string]string{store.MaxBytesTag: "1000"}})
	ctx := t.Context()
	start := time.Now()
	if _, err := b.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatalf("a pass over a stream of %d rows capped to 1000 bytes: %v", rows, err)
	}
	t.Logf("the pass took %v", time.Since(start))
	var left int
	var first int64
	if err := a.pool.QueryRow(ctx, `SELECT count(*), min(number) FROM kvs_fragments`).Scan(&left, &first); err != nil {
		t.Fatal(err)
	}
	if left != 100 || first != rows-99 {
		t.Fatalf("%d rows left from %d, want the newest 100 (1000 bytes) from %d", left, first, rows-99)
	}
}

// tightNode opens a node a that creates st with rows fragments of 10 bytes (numbers 1 to rows,
// 1 s apart from base) and a node b of the same cluster whose every statement must end within
// 100 ms (statement_timeout, and an UnavailableWait of 100 ms), deleting 1,000 rows a step.
func tightNode(t *testing.T, rows int, st store.Stream) (a, b *Store) {
	t.Helper()
	cfg := testConfig(t)
	a = openStore(t, cfg) // sets up, without the short bounds
	t.Cleanup(func() { a.Close() })
	ctx := t.Context()
	if err := a.CreateStream(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pool.Exec(ctx, `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns,
		duration_ns, size, object_id, object_offset, crc)
		SELECT (SELECT id FROM kvs_streams WHERE name = $3), i, $1::bigint + i * 1000000000,
			$1::bigint + i * 1000000000, 1000000000, 10, 0, 0, 0
		FROM generate_series(1, $2::bigint) AS i`, store.UnixNanos(base), rows, st.Name); err != nil {
		t.Fatal(err)
	}
	// As autovacuum would have by then: without statistics the planner takes the stream for a
	// few hundred rows, and reads all of them for the newest thousand.
	if _, err := a.pool.Exec(ctx, `ANALYZE kvs_fragments`); err != nil {
		t.Fatal(err)
	}
	tight := cfg
	tight.Index += "&statement_timeout=100"
	tight.UnavailableWait = 100 * time.Millisecond
	tight.NodeURL = "http://node-b:4567"
	b = openStore(t, tight)
	t.Cleanup(func() { b.Close() })
	b.purgeRows = 1000
	return a, b
}

// TestDeletedByEarlierNode: the rows of a stream deleted by a node of an earlier kvs during a
// rolling upgrade (its DeleteStream deletes the stream's row and relies on the cascade that
// migration 3 dropped, recording nothing in kvs_dropped_streams) are found and deleted by the
// cleanup too, not left for ever with their objects.
func TestDeletedByEarlierNode(t *testing.T) {
	t.Parallel()
	s := streamWithRows(t, 2000, time.Second)
	ctx := t.Context()
	s.purgeRows = 300
	if _, err := s.pool.Exec(ctx, `WITH d AS (DELETE FROM kvs_streams WHERE name = 's' RETURNING name, number_hwm)
		INSERT INTO kvs_retired_names (name, number_hwm) SELECT name, number_hwm FROM d`); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stats(ctx); err != nil || st.Fragments != 0 {
		t.Errorf("stats before the pass: %+v, %v; want no fragments", st, err)
	}
	if _, err := s.EnforceRetention(ctx, base); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM kvs_fragments`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d rows of the stream an earlier node deleted left after a pass, want 0", left)
	}
}
