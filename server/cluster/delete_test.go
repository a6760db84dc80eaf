package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// TestDeleteStreamManyRows: deleting a stream of many fragment rows answers without deleting
// them and leaves them to the cleanup, which deletes them in steps of purgeRows. DeleteStream
// was one statement whose ON DELETE CASCADE deleted every fragment row of the stream under
// bound's UnavailableWait: past a few million rows (10 s) it failed with ErrUnavailable (a 503
// the AWS CLI and SDKs retry, each retry failing the same way, the stream whole) and the stream
// could never be deleted. (Shown when this was fixed, 23e12bd, with 500,000 rows against a
// statement_timeout of 100 ms: `no answer within the unavailable wait`; such a test depends on
// the machine's speed, so this one checks the shape instead: rows left to steps.)
func TestDeleteStreamManyRows(t *testing.T) {
	t.Parallel()
	const rows = 20_000
	s := bigStream(t, rows, store.Stream{Name: "s", RetentionHours: 24})
	ctx := t.Context()
	if _, err := s.pool.Exec(ctx, `UPDATE kvs_streams SET number_hwm = $1 WHERE name = 's'`, rows+1000); err != nil {
		t.Fatal(err)
	}
	count := func(q string) int { t.Helper(); return countRows(t, s, q) }
	if err := s.DeleteStream(ctx, "s", ""); err != nil {
		t.Fatalf("deleting a stream of %d fragments: %v", rows, err)
	}
	if n := count(`SELECT count(*) FROM kvs_fragments`); n != rows {
		t.Errorf("%d fragment rows right after DeleteStream, want all %d left to the cleanup", n, rows)
	}
	if n := count(`SELECT count(*) FROM kvs_dropped_streams`); n != 1 {
		t.Errorf("%d streams recorded for the cleanup, want 1", n)
	}
	if _, err := s.GetStream(ctx, "s"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("the deleted stream: %v, want ErrStreamNotFound", err)
	}
	// Created again under its name: none of the old rows, numbers above the old ones.
	if err := s.CreateStream(ctx, store.Stream{Name: "s", RetentionHours: 24}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Range(ctx, "s", 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("the new stream s: %d fragments, %v; want none of the deleted one's", len(got), err)
	}
	if n, err := s.NextNumber(ctx, "s"); err != nil || n <= rows+1000 {
		t.Fatalf("the new stream's first number: %d, %v; want above the deleted one's %d", n, err, rows+1000)
	}
	if st, err := s.Stats(ctx); err != nil || st.Fragments != 0 {
		t.Errorf("stats after the delete: %+v, %v; want no fragments", st, err)
	}
	// One cleanup pass deletes the rows, purgeRows a step.
	steps := cleanupSteps(s)
	if _, err := s.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatalf("cleanup pass: %v", err)
	}
	if n := count(`SELECT count(*) FROM kvs_fragments`); n != 0 {
		t.Errorf("%d rows of the deleted stream left after a pass", n)
	}
	if n := count(`SELECT count(*) FROM kvs_dropped_streams`); n != 0 {
		t.Errorf("%d streams still recorded for the cleanup after it deleted their rows", n)
	}
	checkSteps(t, steps["dropped"], rows, s.purgeRows)
}

// TestStreamCapManyRows: a kvs:max-bytes cap lowered far below what a stream of many rows holds
// is applied in steps. applyCaps deleted every row over the cap in one window-function DELETE
// inside the pass's last transaction: past some tens of millions of rows (the pass's 30 s +
// UnavailableWait, sooner under a statement_timeout) it failed on every pass, and with it the
// deletion of every unreferenced object of the cluster. (Shown when this was fixed, 4899620, with
// 500,000 rows against a statement_timeout of 100 ms: the one DELETE took 2.3 s; this test
// checks the shape: purgeRows a step, the newest rows kept.)
func TestStreamCapManyRows(t *testing.T) {
	t.Parallel()
	const rows = 20_000
	s := bigStream(t, rows, store.Stream{Name: "s", RetentionHours: 24 * 365, Tags: map[string]string{store.MaxBytesTag: "1000"}})
	ctx := t.Context()
	steps := cleanupSteps(s)
	if _, err := s.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatalf("a pass over a stream of %d rows capped to 1000 bytes: %v", rows, err)
	}
	var left int
	var first int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(number) FROM kvs_fragments`).Scan(&left, &first); err != nil {
		t.Fatal(err)
	}
	if left != 100 || first != rows-99 {
		t.Fatalf("%d rows left from %d, want the newest 100 (1000 bytes) from %d", left, first, rows-99)
	}
	checkSteps(t, steps["cap"], rows-100, s.purgeRows)
}

// bigStream opens a node that creates st with rows fragments of 10 bytes (numbers 1 to rows, 1 s
// apart from base) and deletes 1,000 rows a cleanup step.
func bigStream(t *testing.T, rows int, st store.Stream) *Store {
	t.Helper()
	s := openStore(t, testConfig(t))
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.CreateStream(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns,
		duration_ns, size, object_id, object_offset, crc)
		SELECT (SELECT id FROM kvs_streams WHERE name = $3), i, $1::bigint + i * 1000000000,
			$1::bigint + i * 1000000000, 1000000000, 10, 0, 0, 0
		FROM generate_series(1, $2::bigint) AS i`, store.UnixNanos(base), rows, st.Name); err != nil {
		t.Fatal(err)
	}
	// As autovacuum would have by then: without statistics the planner takes the stream for a
	// few hundred rows, and reads all of them for the newest thousand.
	if _, err := s.pool.Exec(ctx, `ANALYZE kvs_fragments`); err != nil {
		t.Fatal(err)
	}
	s.purgeRows = 1000
	return s
}

// countRows returns the count query q answers on s's database.
func countRows(t *testing.T, s *Store, q string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(t.Context(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// cleanupSteps records the rows of each cleanup step of s by kind ("cap", "dropped").
func cleanupSteps(s *Store) map[string][]int64 {
	steps := map[string][]int64{}
	s.testHookCleanupStep = func(kind string, rows int64) { steps[kind] = append(steps[kind], rows) }
	return steps
}

// checkSteps checks that steps deleted total rows, at most per a step.
func checkSteps(t *testing.T, steps []int64, total, per int) {
	t.Helper()
	sum := int64(0)
	for _, n := range steps {
		sum += n
		if n > int64(per) {
			t.Errorf("a step deleted %d rows, want at most %d (steps %v)", n, per, steps)
			break
		}
	}
	if sum != int64(total) || len(steps) < total/per {
		t.Errorf("%d steps deleted %d rows, want %d rows in at least %d steps", len(steps), sum, total, total/per)
	}
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
