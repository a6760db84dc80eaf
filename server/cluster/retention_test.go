package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// TestRetentionInSteps: a pass deletes the expired rows in slices of server time across the
// streams, each step committed on its own (a pass used to be one DELETE, which at tens of millions of rows ran past the pass's
// timeout and failed the same way on every pass), and another node's pass (an
// UpdateDataRetention decrease's, say) runs between two steps instead of waiting for the whole
// pass. The other streams keep their rows.
func TestRetentionInSteps(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, nil)
	ctx := t.Context()
	const perStream = 1000
	ids := map[string]int64{}
	// insert adds fragments from to to of 1 s each, the first at base + from s, 10 bytes each,
	// as committed uploads leave them.
	insert := func(name string, from, to int) {
		if _, err := a.pool.Exec(ctx, `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns,
			duration_ns, size, object_id, object_offset, crc)
			SELECT $1, i, $2::bigint + i * 1000000000, $2::bigint + i * 1000000000, 1000000000, 10, 0, 0, 0
			FROM generate_series($3::bigint, $4::bigint) AS i`, ids[name], store.UnixNanos(base), from, to); err != nil {
			t.Fatal(err)
		}
	}
	for name, hours := range map[string]int{"cam-1": 1, "cam-2": 1, "keep": 10} {
		if err := a.CreateStream(ctx, store.Stream{Name: name, RetentionHours: hours}); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := a.pool.QueryRow(ctx, `SELECT id FROM kvs_streams WHERE name = $1`, name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[name] = id
		insert(name, 1, perStream)
	}
	count := func(names ...string) int {
		var n int
		var want []int64
		for _, name := range names {
			want = append(want, ids[name])
		}
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM kvs_fragments WHERE stream_id = ANY($1)`, want).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a.purgeRows = 300
	var steps []int
	var byB int
	a.testHookCleanupStep = func(kind string, _ int64) {
		if kind != "expired" {
			return
		}
		// What a step deleted is committed before the next one starts.
		steps = append(steps, count("cam-1", "cam-2"))
		if len(steps) == 1 {
			// The other node's pass gets the cleanup lock between two steps and finishes.
			n, err := b.EnforceRetention(ctx, base.Add(2*time.Hour))
			if err != nil {
				t.Errorf("the other node's pass during a's: %v", err)
			}
			byB = n
		}
	}
	// Every cam fragment (at base + 1..1000 s) is older than 1 h at base + 2 h; keep's are not
	// older than 10 h. The first step takes the first minute from the oldest fragment (base +
	// 1 s): 60 fragments of each cam stream.
	const first = 2 * 60
	n, err := a.EnforceRetention(ctx, base.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || steps[0] != 2*perStream-first {
		t.Errorf("expired rows left after each of a's steps: %v, want %d after the first", steps, 2*perStream-first)
	}
	if n != first || byB != 2*perStream-first {
		t.Errorf("a deleted %d rows, b %d during a's pass; want %d and %d", n, byB, first, 2*perStream-first)
	}
	if got := count("cam-1", "cam-2"); got != 0 {
		t.Errorf("%d expired rows left", got)
	}
	if got := count("keep"); got != perStream {
		t.Errorf("keep has %d rows, want its %d", got, perStream)
	}

	// Alone, a pass goes on step by step to the end: 2 × 1000 more rows in steps of about 300.
	insert("cam-1", perStream+1, 2*perStream)
	insert("cam-2", perStream+1, 2*perStream)
	steps = nil
	a.testHookCleanupStep = func(kind string, _ int64) {
		if kind == "expired" {
			steps = append(steps, count("cam-1", "cam-2"))
		}
	}
	if n, err := a.EnforceRetention(ctx, base.Add(3*time.Hour)); err != nil || n != 2*perStream {
		t.Errorf("the second pass: %d rows, %v; want %d", n, err, 2*perStream)
	}
	t.Logf("second pass, rows left after each step: %v", steps)
	if len(steps) < 3 || !slices.IsSortedFunc(steps, func(x, y int) int { return y - x }) {
		t.Errorf("expired rows left after each step of the second pass: %v, want at least 3 steps, falling", steps)
	}
	if got := count("cam-1", "cam-2", "keep"); got != perStream {
		t.Errorf("%d rows left, want keep's %d", got, perStream)
	}
}

// TestRetentionSparseRowsFewSteps: a pass over sparse rows (a motion-triggered camera's, a
// fragment an hour for a year, and a retention decrease to 1 h) widens its slices as it finds
// few rows, and goes on in a few dozen steps. The next slice was slice × purgeRows / n in int64
// nanoseconds: past about 51 h of slice that overflowed, the slice fell to 1 ms and the pass
// crept on a row at a time, thousands of steps (each a transaction under the cleanup lock that
// the other nodes' passes wait for).
func TestRetentionSparseRowsFewSteps(t *testing.T) {
	t.Parallel()
	const rows = 365 * 24
	s := streamWithRows(t, rows, time.Hour)
	ctx := t.Context()
	steps := 0
	s.testHookCleanupStep = func(kind string, _ int64) {
		if kind == "expired" {
			steps++
		}
	}
	n, err := s.EnforceRetention(ctx, base.Add((rows+2)*time.Hour))
	if err != nil || n != rows {
		t.Fatalf("retention: %d rows deleted, %v; want %d", n, err, rows)
	}
	if steps > 100 {
		t.Fatalf("a pass over %d rows an hour apart took %d steps, want a few dozen: its slices fell back to 1 ms", rows, steps)
	}
}

// TestRetentionIncreaseDuringPass: a retention increase made while a pass is on its way (a long
// purge goes in many steps, minutes at tens of millions of rows) holds for the rest of the pass:
// the pass took each stream's cutoff once, at its start, and went on deleting by it, rows the
// stream now keeps.
func TestRetentionIncreaseDuringPass(t *testing.T) {
	t.Parallel()
	s := streamWithRows(t, 1000, time.Second)
	ctx := t.Context()
	s.purgeRows = 100
	left := 0
	s.testHookCleanupStep = func(kind string, _ int64) {
		if kind != "expired" || left != 0 {
			return
		}
		// After the first step: the stream keeps 10 h from now on, all it has left.
		if _, err := s.UpdateStream(ctx, "s", func(st *store.Stream) error { st.RetentionHours = 10; return nil }); err != nil {
			t.Error(err)
		}
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM kvs_fragments`).Scan(&left); err != nil {
			t.Error(err)
		}
	}
	// At base + 2 h every fragment is older than 1 h, none older than 10 h.
	if _, err := s.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	var got int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM kvs_fragments`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if left == 0 || got != left {
		t.Fatalf("%d fragments left after the pass, %d when the retention went up to 10 h after its first step; want all those kept", got, left)
	}
}

// streamWithRows opens a node with a stream "s" of 1 h retention and its rows fragments, the
// first at base + apart and each apart after the one before, as committed uploads leave them.
func streamWithRows(t *testing.T, rows int, apart time.Duration) *Store {
	t.Helper()
	s := openStore(t, testConfig(t))
	t.Cleanup(func() { s.Close() })
	if err := s.CreateStream(t.Context(), store.Stream{Name: "s", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns,
		duration_ns, size, object_id, object_offset, crc)
		SELECT (SELECT id FROM kvs_streams WHERE name = 's'), i, $1::bigint + i * $3::bigint,
			$1::bigint + i * $3::bigint, 1000000000, 10, 0, 0, 0
		FROM generate_series(1, $2::bigint) AS i`, store.UnixNanos(base), rows, int64(apart)); err != nil {
		t.Fatal(err)
	}
	return s
}
