package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/server/store"
)

var base = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// two opens two nodes on one namespace.
func two(t *testing.T, mod func(*Config)) (a, b *Store, cfg Config) {
	t.Helper()
	cfg = testConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	ca, cb := cfg, cfg
	ca.NodeURL, cb.NodeURL = "http://node-a:4567", "http://node-b:4567"
	a, b = openStore(t, ca), openStore(t, cb)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, cfg
}

// expireAndTake ends stream's lease (its owner stopped renewing, as a paused process would) and
// has s take it.
func expireAndTake(t *testing.T, s *Store, stream string) {
	t.Helper()
	if _, err := s.pool.Exec(t.Context(), `UPDATE kvs_streams SET lease_expires = now() - interval '1 second' WHERE name = $1`, stream); err != nil {
		t.Fatal(err)
	}
	if owner, err := s.Acquire(t.Context(), stream); err != nil || owner != "" {
		t.Fatalf("acquiring the expired lease of %s: %q, %v", stream, owner, err)
	}
}

func appendAt(t *testing.T, s *Store, stream string, at time.Time) (uint64, func(context.Context) error) {
	t.Helper()
	n, err := s.NextNumber(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	wait, err := s.AppendAsync(t.Context(), stream, store.FragmentMeta{Number: n, ServerTime: at, ProducerTime: at, Duration: time.Second},
		[]byte(fmt.Sprintf("%s-%d", stream, n)))
	if err != nil {
		t.Fatal(err)
	}
	return n, wait
}

// TestLeaseFencing: one writer per stream. Another node is told who writes it; when the owner
// stops renewing (a paused process) the lease moves with a new epoch, and the old owner's
// appends are fenced: its commit inserts nothing, its waits say ErrNotOwner, and the new
// owner's numbers start above every number the old one reserved.
func TestLeaseFencing(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, func(c *Config) { c.LeaseTTL = time.Hour })
	ctx := t.Context()
	if err := a.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	if owner, err := a.Acquire(ctx, "cam"); err != nil || owner != "" {
		t.Fatalf("a acquires: %q, %v", owner, err)
	}
	n1, wait := appendAt(t, a, "cam", base)
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	if owner, err := b.Acquire(ctx, "cam"); err != nil || owner != "http://node-a:4567" {
		t.Fatalf("b acquires a held stream: %q, %v; want a's URL", owner, err)
	}
	if _, err := b.NextNumber(ctx, "cam"); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("b numbers a held stream: %v, want ErrNotOwner", err)
	}
	if url, self, err := b.Owner(ctx, "cam"); err != nil || url != "http://node-a:4567" || self {
		t.Fatalf("Owner on b: %q %v %v", url, self, err)
	}

	// a stops renewing (as a paused process would): its lease runs out and b takes it.
	n2, err := a.NextNumber(ctx, "cam")
	if err != nil {
		t.Fatal(err)
	}
	expireAndTake(t, b, "cam")
	// a wakes up and appends what it had: fenced.
	wait, err = a.AppendAsync(ctx, "cam", store.FragmentMeta{Number: n2, ServerTime: base.Add(time.Second)}, []byte("late"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("the old owner's append: %v, want ErrNotOwner", err)
	}
	n3, wait := appendAt(t, b, "cam", base.Add(2*time.Second))
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n3 <= n2 || n3 <= n1 {
		t.Fatalf("the new owner's number %d is not above the old owner's %d, %d", n3, n1, n2)
	}
	got, err := b.Range(ctx, "cam", 0, 0)
	if err != nil || len(got) != 2 || got[0].Number != n1 || got[1].Number != n3 {
		t.Fatalf("stored %+v, %v; want %d and %d, not the fenced %d", got, err, n1, n3, n2)
	}
	// a is told the lease moved: it does not take it back while b's is live.
	if owner, err := a.Acquire(ctx, "cam"); err != nil || owner != "http://node-b:4567" {
		t.Fatalf("old owner acquires again: %q, %v", owner, err)
	}
	var epoch int64
	if err := a.pool.QueryRow(ctx, `SELECT epoch FROM kvs_streams WHERE name = 'cam'`).Scan(&epoch); err != nil || epoch != 2 {
		t.Fatalf("epoch %d, %v; want 2 (one per owner)", epoch, err)
	}
	// Release frees the lease at once: a producer reconnecting to a writes there.
	b.Release("cam")
	if owner, err := a.Acquire(ctx, "cam"); err != nil || owner != "" {
		t.Fatalf("after release: %q, %v", owner, err)
	}
}

// TestLeaseRace: two nodes racing for many streams: exactly one wins each.
func TestLeaseRace(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, nil)
	ctx := t.Context()
	const n = 40
	for i := range n {
		if err := a.CreateStream(ctx, store.Stream{Name: fmt.Sprint("s", i), RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wins := make([][2]bool, n)
	for i := range n {
		for j, s := range []*Store{a, b} {
			wg.Go(func() {
				owner, err := s.Acquire(ctx, fmt.Sprint("s", i))
				if err != nil {
					t.Error(err)
				}
				wins[i][j] = owner == ""
			})
		}
	}
	wg.Wait()
	for i, w := range wins {
		if w[0] == w[1] {
			t.Errorf("stream s%d: a won %v, b won %v; want exactly one", i, w[0], w[1])
		}
	}
}

// TestWatchAcrossNodes: a commit on one node is announced on the other.
func TestWatchAcrossNodes(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, nil)
	ctx := t.Context()
	if err := a.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	seen := watchCam(t, b)
	n, wait := appendAt(t, a, "cam", base)
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-seen:
		if got != n {
			t.Fatalf("notice for %d, want %d", got, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no commit notice on the other node")
	}
}

// TestWatchOwnCluster: two clusters in different schemas of one database (as the tests run) do
// not hear each other's commits, though both have a stream "cam".
func TestWatchOwnCluster(t *testing.T) {
	t.Parallel()
	x, y := openStore(t, testConfig(t)), openStore(t, testConfig(t))
	t.Cleanup(func() { x.Close(); y.Close() })
	ctx := t.Context()
	for _, s := range []*Store{x, y} {
		if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
	}
	seen := watchCam(t, y)
	// The other cluster's commits come first, under numbers this one never gives "cam" here
	// (both number a new stream alike: skip 100 of them there).
	for range 100 {
		if _, err := x.NextNumber(ctx, "cam"); err != nil {
			t.Fatal(err)
		}
	}
	var other []uint64
	for i := range 3 {
		m, wait := appendAt(t, x, "cam", base.Add(time.Duration(i)*time.Second))
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
		other = append(other, m)
	}
	n, wait := appendAt(t, y, "cam", base)
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(other, n) {
		t.Fatalf("both clusters committed %d: the test cannot tell them apart", n)
	}
	select {
	case got := <-seen:
		if got != n {
			t.Fatalf("notice for %d, want %d (%v are the other cluster's)", got, n, other)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no commit notice")
	}
}

// TestBatchObjects: fragments of several streams share one object per flush; an object goes
// from the object store when its last fragment expires, not before; an object PUT but never
// committed is found and deleted by the orphan sweep.
func TestBatchObjects(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.FlushInterval = time.Hour // flushed by size
	cfg.FlushBytes = 30
	s := openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	s.objectGrace, s.orphanAge, s.orphanEvery = 0, 0, 0
	s.objectsPerQuery = 1 // the two objects that go at the end take a pass of two queries
	ctx := t.Context()
	for name, hours := range map[string]int{"short": 1, "long": 10} {
		if err := s.CreateStream(ctx, store.Stream{Name: name, RetentionHours: hours}); err != nil {
			t.Fatal(err)
		}
	}
	var waits []func(context.Context) error
	for i := range 4 { // 8 fragments of 6 or 7 bytes: one object of 30 bytes or more, then the rest
		for _, name := range []string{"short", "long"} {
			_, w := appendAt(t, s, name, base.Add(time.Duration(i)*time.Second))
			waits = append(waits, w)
		}
	}
	s.batches.mu.Lock()
	s.batches.sealLocked() // the rest
	s.batches.mu.Unlock()
	for _, w := range waits {
		if err := w(ctx); err != nil {
			t.Fatal(err)
		}
	}
	objects := func() []string {
		out, err := s.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(cfg.Objects.Bucket)})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		return keys
	}
	if got := objects(); len(got) != 2 {
		t.Fatalf("objects %v, want 2 (8 fragments of 2 streams, 52 bytes, in batches of 30)", got)
	}
	// An orphan: a PUT whose commit never happened.
	orphan := s.objectKey(time.Now(), 999)
	if _, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(cfg.Objects.Bucket), Key: aws.String(orphan),
		Body: nil}); err != nil {
		t.Fatal(err)
	}
	// "short" expires: the objects still hold "long" fragments and stay; the orphan goes.
	if n, err := s.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil || n != 4 {
		t.Fatalf("retention: %d, %v; want 4", n, err)
	}
	if got := objects(); len(got) != 2 {
		t.Fatalf("after short expired: objects %v, want the 2 batch objects", got)
	}
	// A reader that looked a fragment up before its object went gets ErrFragmentNotFound (it
	// was a 5xx: store.ErrUnavailable).
	long, err := s.Range(ctx, "long", 0, 1)
	if err != nil || len(long) != 1 {
		t.Fatal(long, err)
	}
	objectOf := func() string {
		var key string
		if err := s.pool.QueryRow(ctx, `SELECT o.key FROM kvs_fragments f JOIN kvs_objects o ON o.id = f.object_id
			JOIN kvs_streams st ON st.id = f.stream_id WHERE st.name = 'long' AND f.number = $1`, int64(long[0].Number)).Scan(&key); err != nil {
			t.Fatal(err)
		}
		return key
	}
	if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(cfg.Objects.Bucket), Key: aws.String(objectOf())}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AppendPayload(ctx, "long", long[0].Number, nil); !errors.Is(err, store.ErrFragmentNotFound) {
		t.Errorf("a fragment whose object was deleted: %v, want ErrFragmentNotFound", err)
	}
	if n, err := s.EnforceRetention(ctx, base.Add(11*time.Hour)); err != nil || n != 4 {
		t.Fatalf("retention: %d, %v; want 4", n, err)
	}
	if got := objects(); len(got) != 0 {
		t.Fatalf("after every fragment expired: objects %v, want none (in one pass)", got)
	}
}

// TestMigrateTogether: nodes that start at once on an empty database create the schema once
// and agree on the session key.
func TestMigrateTogether(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := cfg
			c.NodeURL = fmt.Sprintf("http://node-%d:4567", i)
			stores[i], errs[i] = Open(t.Context(), c)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	var version, schemas int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT version, (SELECT count(*) FROM kvs_schema) FROM kvs_schema`).Scan(&version, &schemas); err != nil {
		t.Fatal(err)
	}
	if version != len(migrations) || schemas != 1 {
		t.Fatalf("schema version %d in %d rows, want %d in 1", version, schemas, len(migrations))
	}
	for i := 1; i < n; i++ {
		if !bytes.Equal(stores[i].SessionKey(), stores[0].SessionKey()) || len(stores[0].SessionKey()) != 32 {
			t.Fatalf("node %d has another session key", i)
		}
	}
	nodes, err := stores[0].Nodes(t.Context())
	if err != nil || len(nodes) != n {
		t.Fatalf("nodes %+v, %v; want %d", nodes, err, n)
	}
}

// watchCam registers a Watch on s that passes on the commit notices of stream "cam" (until the
// test ends) and returns once s listens.
func watchCam(t *testing.T, s *Store) <-chan uint64 {
	t.Helper()
	seen := make(chan uint64, 64)
	stop := s.Watch(func(stream string, last uint64) {
		if stream == "cam" {
			seen <- last
		}
	})
	t.Cleanup(stop)
	for !s.Watching() {
		time.Sleep(5 * time.Millisecond)
	}
	return seen
}

// TestReleaseThenAcquire: an upload ends (Release gives the lease up) while the next one starts
// on the same node (a producer reconnecting at once after an ERROR): the new upload's appends
// are committed. Acquire used to take the row while it was still this node's, keeping the old
// epoch, and the old lease's give-up then freed it: the new appends failed as written by
// another node. The hook starts the new Acquire just before the row is freed.
func TestReleaseThenAcquire(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t))
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	if owner, err := s.Acquire(ctx, "cam"); err != nil || owner != "" {
		t.Fatalf("Acquire: %q, %v", owner, err)
	}
	if _, wait := appendAt(t, s, "cam", base); wait(ctx) != nil {
		t.Fatal("first append not committed")
	}
	acquired := make(chan error, 1)
	hook := func(*lease) {
		go func() {
			owner, err := s.Acquire(ctx, "cam")
			if err == nil && owner != "" {
				err = fmt.Errorf("Acquire names %s", owner)
			}
			acquired <- err
		}()
		time.Sleep(200 * time.Millisecond) // the Acquire's turn to take the row, had it not to wait
	}
	s.testHookGiveUp.Store(&hook)
	s.Release("cam")
	if err := <-acquired; err != nil {
		t.Fatal(err)
	}
	s.testHookGiveUp.Store(nil)
	n, wait := appendAt(t, s, "cam", base.Add(time.Second))
	if err := wait(ctx); err != nil {
		t.Fatalf("append %d of the upload after the release: %v", n, err)
	}
	s.Release("cam")
}

// TestCleanupLockPerCluster: one node at a time cleans a cluster up (another node holding the
// lock: EnforceRetention waits for it, then runs), but two clusters in schemas of one database do not hold each
// other up (the shared-database form of the lock made this package's retention tests skip their
// run now and then, while another test's store ran its own).
func TestCleanupLockPerCluster(t *testing.T) {
	t.Parallel()
	cfgA, cfgB := testConfig(t), testConfig(t)
	a, b := openStore(t, cfgA), openStore(t, cfgB)
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx := t.Context()
	for _, s := range []*Store{a, b} {
		if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
		if _, wait := appendAt(t, s, "cam", base); wait(ctx) != nil {
			t.Fatal("append not committed")
		}
	}
	// Another node of cluster A cleans up: it holds A's lock in a transaction of its own.
	other, err := pgx.Connect(ctx, cfgA.Index)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, `+schemaLock+`)`, cleanupLock); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	ranA := make(chan result, 1)
	go func() {
		n, err := a.EnforceRetention(ctx, base.Add(2*time.Hour))
		ranA <- result{n, err}
	}()
	if n, err := b.EnforceRetention(ctx, base.Add(2*time.Hour)); err != nil || n != 1 {
		t.Errorf("cluster B while cluster A cleans up: %d, %v; want 1", n, err)
	}
	select {
	case r := <-ranA:
		t.Errorf("cluster A while another of its nodes cleans up: %d, %v; want it to wait for that node", r.n, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-ranA; r.err != nil || r.n != 1 {
		t.Errorf("cluster A after its other node is done: %d, %v; want 1", r.n, r.err)
	}
}

// TestOldNumberUnderNewLease: a number reserved under a lease that was lost meanwhile (another
// node took the stream, committed higher numbers and let it go) is refused when the first
// owner, taking the stream again, appends it: it would sort after the other node's. Before, it
// was committed under the new epoch, below numbers committed earlier.
func TestOldNumberUnderNewLease(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, func(c *Config) { c.LeaseTTL = time.Hour })
	ctx := t.Context()
	if err := a.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	old, err := a.NextNumber(ctx, "cam") // a fragment starts on a
	if err != nil {
		t.Fatal(err)
	}
	expireAndTake(t, b, "cam")
	n, wait := appendAt(t, b, "cam", base)
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	b.Release("cam")
	if err := a.renew(ctx); err != nil {
		t.Fatal(err)
	}
	// a's fragment ends: it appends the number it reserved, under a lease it takes again.
	wait, err = a.AppendAsync(ctx, "cam", store.FragmentMeta{Number: old, ServerTime: base.Add(time.Second)}, []byte("late"))
	if err == nil {
		err = wait(ctx)
	}
	if !errors.Is(err, store.ErrNumberOrder) {
		t.Errorf("append of %d reserved under the lost lease, after %d was committed: %v, want ErrNumberOrder", old, n, err)
	}
	got, err := a.Range(ctx, "cam", 0, 0)
	if err != nil || len(got) != 1 || got[0].Number != n {
		t.Errorf("stored %v, %v; want only %d", got, err, n)
	}
}

// TestCommitFencedWhileStalled: a commit that checked its epoch and stalled before COMMIT (a
// slow connection, a paused process) while its lease ran out and another node took the stream
// and committed: the take waits for the stalled commit (which locks the stream row it checked),
// so by the time the new owner's fragment is durable, every lower number that will ever be
// listed is listed. Before, the take went ahead, and the old owner's fragment appeared below the
// new owner's afterwards (a live reader past it never saw it).
func TestCommitFencedWhileStalled(t *testing.T) {
	t.Parallel()
	a, b, _ := two(t, func(c *Config) { c.LeaseTTL = time.Hour })
	ctx := t.Context()
	if err := a.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	stalled, resume := make(chan struct{}), make(chan struct{})
	var once, resumed sync.Once
	release := func() { resumed.Do(func() { close(resume) }) }
	t.Cleanup(release) // before the stores close (their cleanup waits for the commit)
	a.testCommitHook = func() {
		once.Do(func() {
			close(stalled)
			<-resume
		})
	}
	n1, wait1 := appendAt(t, a, "cam", base)
	<-stalled // a's commit has checked the epoch and inserted its row

	// Meanwhile a's lease runs out and b takes the stream and appends.
	type seen struct {
		n2   uint64
		list []store.FragmentMeta
		err  error
	}
	bDone := make(chan seen, 1)
	go func() {
		var r seen
		defer func() { bDone <- r }()
		if _, r.err = b.pool.Exec(ctx, `UPDATE kvs_streams SET lease_expires = now() - interval '1 second' WHERE name = 'cam'`); r.err != nil {
			return
		}
		if owner, err := b.Acquire(ctx, "cam"); err != nil || owner != "" {
			r.err = fmt.Errorf("b acquires: %q, %v", owner, err)
			return
		}
		if r.n2, r.err = b.NextNumber(ctx, "cam"); r.err != nil {
			return
		}
		var wait func(context.Context) error
		if wait, r.err = b.AppendAsync(ctx, "cam", store.FragmentMeta{Number: r.n2, ServerTime: base.Add(time.Second)}, []byte("b")); r.err != nil {
			return
		}
		if r.err = wait(ctx); r.err != nil {
			return
		}
		r.list, r.err = b.Range(ctx, "cam", 0, 0) // what a reader sees once b's fragment is durable
	}()
	time.Sleep(300 * time.Millisecond)
	release()
	if err := wait1(ctx); err != nil {
		t.Fatalf("a's commit, checked before the take: %v", err)
	}
	r := <-bDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	final, err := b.Range(ctx, "cam", 0, 0)
	if err != nil || len(final) != 2 || final[0].Number != n1 || final[1].Number != r.n2 {
		t.Fatalf("stored %v, %v; want %d then %d", numbers(final), err, n1, r.n2)
	}
	if !slices.Equal(numbers(r.list), numbers(final)) {
		t.Errorf("listed %v once b's fragment %d was durable, %v later: a's %d appeared below it afterwards",
			numbers(r.list), r.n2, numbers(final), n1)
	}
}

func numbers(ms []store.FragmentMeta) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Number)
	}
	return out
}
