package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// TestDeleteWhileCommitting: a commit and a DeleteStream of its stream at once leave no fragment
// row that the cleanup does not know of. Either the commit holds the stream's row (FOR SHARE) and
// DeleteStream waits for it, then records the stream with the committed row; or the delete came
// first and the commit inserts nothing. The next cleanup pass deletes the rows and the objects.
func TestDeleteWhileCommitting(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t))
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	count := func(q string) int { t.Helper(); return countRows(t, s, q) }
	const unrecorded = `SELECT count(*) FROM kvs_fragments f WHERE NOT EXISTS (SELECT 1 FROM kvs_streams s WHERE s.id = f.stream_id)
		AND NOT EXISTS (SELECT 1 FROM kvs_dropped_streams d WHERE d.id = f.stream_id)`

	// The commit first: it stalls after its INSERT, DeleteStream comes meanwhile.
	if err := s.CreateStream(ctx, store.Stream{Name: "a", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	stalled, resume := make(chan struct{}), make(chan struct{})
	var once, resumed sync.Once
	release := func() { resumed.Do(func() { close(resume) }) }
	t.Cleanup(release)
	s.testCommitHook = func() {
		once.Do(func() {
			close(stalled)
			<-resume
		})
	}
	_, wait := appendAt(t, s, "a", base)
	<-stalled
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteStream(ctx, "a", "") }()
	time.Sleep(200 * time.Millisecond)
	release()
	if err := wait(ctx); err != nil {
		t.Fatalf("the commit that held the stream's row: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("DeleteStream after the commit: %v", err)
	}
	if n := count(unrecorded); n != 0 {
		t.Fatalf("%d fragment rows of a deleted stream the cleanup does not know of", n)
	}

	// The delete first: a transaction has deleted the stream's row as DeleteStream does and not
	// committed yet when the commit comes.
	if err := s.CreateStream(ctx, store.Stream{Name: "b", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NextNumber(ctx, "b"); err != nil { // the lease
		t.Fatal(err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `WITH d AS (DELETE FROM kvs_streams WHERE name = 'b' RETURNING id)
		INSERT INTO kvs_dropped_streams (id) SELECT id FROM d`); err != nil {
		t.Fatal(err)
	}
	_, wait = appendAt(t, s, "b", base)
	time.Sleep(200 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err == nil {
		t.Errorf("a commit after its stream was deleted succeeded")
	}
	if n := count(unrecorded); n != 0 {
		t.Fatalf("%d fragment rows of a deleted stream the cleanup does not know of", n)
	}
	s.objectGrace = 0
	if _, err := s.EnforceRetention(ctx, base); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM kvs_fragments`); n != 0 {
		t.Fatalf("%d fragment rows of deleted streams after a pass", n)
	}
	if n := count(`SELECT count(*) FROM kvs_objects`); n != 0 {
		t.Fatalf("%d objects of deleted streams after a pass", n)
	}
}
