package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
	"github.com/openkvs/kvs/server/store"
)

// TestBackendOutage cuts the node off the object store, then off PostgreSQL, while it writes
// (connections refused and the open ones reset, through a backends.Link each): appends fail
// with ErrUnavailable after UnavailableWait (nothing acknowledged that is not stored), and the
// node recovers by itself once each backend is back.
func TestBackendOutage(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cfg := testConfig(t)
	cfg.UnavailableWait = 3 * time.Second // not less: the test runs beside others, and a loaded machine is not an outage
	var s3Link, pgLink *backends.Link
	cfg.Objects.Endpoint, s3Link = backends.Through(t, cfg.Objects.Endpoint)
	cfg.Index, pgLink = backends.Through(t, cfg.Index)
	s := openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	ok := func(at time.Time) uint64 {
		t.Helper()
		n, wait := appendAt(t, s, "cam", at)
		if err := wait(ctx); err != nil {
			t.Fatalf("append %d: %v", n, err)
		}
		return n
	}
	down := func(at time.Time, what string) uint64 {
		t.Helper()
		n, wait := appendAt(t, s, "cam", at)
		if err := wait(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("append %d with %s down: %v, want ErrUnavailable", n, what, err)
		}
		return n
	}
	want := []uint64{ok(base)}

	s3Link.Cut(t)
	lost := down(base.Add(time.Second), "the object store")
	s3Link.Restore(t)
	want = append(want, ok(base.Add(2*time.Second)))

	pgLink.Cut(t)
	lost2 := down(base.Add(3*time.Second), "PostgreSQL")
	pgLink.Restore(t)
	var n uint64
	for deadline := time.Now().Add(30 * time.Second); ; { // the pool reconnects on use
		nn, wait := appendAt(t, s, "cam", base.Add(4*time.Second))
		err := wait(ctx)
		if err == nil {
			n = nn
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no append succeeds after PostgreSQL came back: %v", err)
		}
	}
	want = append(want, n)
	got, err := s.Range(ctx, "cam", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var nums []uint64
	for _, m := range got {
		nums = append(nums, m.Number)
	}
	if len(nums) != len(want) || nums[0] != want[0] || nums[1] != want[1] || nums[2] != want[2] {
		t.Fatalf("stored %v, want %v (not %d or %d, refused while a backend was down)", nums, want, lost, lost2)
	}
	if !s.Watching() {
		for deadline := time.Now().Add(10 * time.Second); !s.Watching(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("commit notifications did not come back after PostgreSQL did")
			}
		}
	}
}

// TestUnavailableHidesPassword: with PostgreSQL down, Open's error and Ready's (which GET
// /readyz shows to anyone, without a signature, and the logs keep) name the index URL without
// its password, wherever the URL carries it: after "user:", or as the password parameter
// (postgres://kvs@db/kvs?password=..., which libpq and pgx read too), which showed as it was;
// nor the password of the client certificate's key (sslpassword=..., pgx's and libpq's), which
// showed as it was too.
func TestUnavailableHidesPassword(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	var pgLink *backends.Link
	cfg.Index, pgLink = backends.Through(t, cfg.Index)
	// The test server trusts every connection: the passwords are not checked.
	cfg.Index = strings.Replace(cfg.Index, "://postgres@", "://postgres:word-1@", 1) + "&password=password-2&sslpassword=keyword-3"
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s with PostgreSQL down: no error", what)
		}
		if strings.Contains(err.Error(), "word-1") || strings.Contains(err.Error(), "password-2") || strings.Contains(err.Error(), "keyword-3") {
			t.Errorf("%s: the error shows the password: %v", what, err)
		}
	}
	pgLink.Cut(t)
	s, err := Open(t.Context(), cfg)
	if s != nil {
		s.Close()
	}
	check("Open", err)
	pgLink.Restore(t)
	s = openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	pgLink.Cut(t)
	check("Ready", s.Ready(t.Context()))
}

// TestTerminatedConnectionUnavailable: a PostgreSQL that ends the node's connections (a restart
// or a failover: "terminating connection due to administrator command", SQLSTATE 57P01; then
// 57P03 "the database system is starting up" to the new ones) is a backend that does not answer,
// a retryable ErrUnavailable (503, ack 5000), not an internal error (500, ack 5001).
func TestTerminatedConnectionUnavailable(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	app := "kvs_" + strings.ToLower(rand.Text()[:10])
	cfg.Index += "&application_name=" + app
	s := openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, cfg.Index[:strings.Index(cfg.Index, "?")])
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	// The pool pings a connection idle for over a second before handing it out (and drops it
	// when the ping fails): the query must come right after the termination, on a connection
	// just used. A few tries, for a loaded machine.
	for range 20 {
		if _, err := s.GetStream(ctx, "cam"); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1 AND pid <> pg_backend_pid() AND query NOT ILIKE 'LISTEN%'`, app); err != nil {
			t.Fatal(err)
		}
		_, err := s.GetStream(ctx, "cam")
		if err == nil {
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			continue // the connection was found closed and replaced, or reset: not this case
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("GetStream on a connection PostgreSQL terminated (SQLSTATE %s): %v, want ErrUnavailable", pgErr.Code, err)
		}
		return
	}
	t.Skip("no query met a terminated connection")
}

// TestSilentPostgres: a PostgreSQL that goes silent (a network partition that drops packets, a
// frozen VM: nothing refused, nothing reset) is ErrUnavailable within UnavailableWait for the
// calls of API requests, as a refused one is. pgx has no read timeout and the requests' contexts
// no deadline: GetStream, Range and PutMedia's Acquire each waited for TCP to give up (a quarter
// of an hour), holding a pooled connection, until the node hung. A caller that gives up first
// still gets its own context's error.
func TestSilentPostgres(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cfg := testConfig(t)
	cfg.UnavailableWait = 3 * time.Second
	var pgLink *backends.Link
	cfg.Index, pgLink = backends.Through(t, cfg.Index)
	s := openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	t.Cleanup(func() { pgLink.Thaw(t) }) // first: Close has a few statements to run
	ctx := t.Context()
	for _, name := range []string{"cam", "cam2"} {
		if err := s.CreateStream(ctx, store.Stream{Name: name, RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, wait := appendAt(t, s, "cam", base); wait(ctx) != nil {
		t.Fatal("append before the freeze failed")
	}

	// A busy node has its pool's connections open: each call below takes one of those (a new
	// connection would fail at its ConnectTimeout, before the freeze matters).
	var open []*pgxpool.Conn
	for range 8 {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	for _, c := range open {
		c.Release()
	}

	for !s.Watching() { // the LISTEN connection is up before the freeze
		select {
		case <-ctx.Done():
			t.Fatal("commit notifications never came up")
		case <-time.After(10 * time.Millisecond):
		}
	}

	pgLink.Freeze(t)
	calls := map[string]func(context.Context) error{
		"GetStream": func(ctx context.Context) error { _, err := s.GetStream(ctx, "cam"); return err },
		"Range":     func(ctx context.Context) error { _, err := s.Range(ctx, "cam", 0, 0); return err },
		"Acquire":   func(ctx context.Context) error { _, err := s.Acquire(ctx, "cam2"); return err },
		"Owner":     func(ctx context.Context) error { _, _, err := s.Owner(ctx, "cam"); return err },
	}
	errs := make(chan error, len(calls))
	for what, call := range calls {
		go func() {
			// Only so that the test fails instead of hanging: no timing is asserted.
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := call(ctx); !errors.Is(err, store.ErrUnavailable) {
				errs <- fmt.Errorf("%s with PostgreSQL silent: %v, want ErrUnavailable", what, err)
				return
			}
			errs <- nil
		}()
	}
	for range calls {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// The node stops claiming to watch commit notifications (/readyz), where it went on for as
	// long as TCP keepalive took to give up on the silent LISTEN connection (minutes).
	for deadline := time.Now().Add(time.Minute); s.Watching(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) { // only so that the test fails instead of hanging
			t.Fatal("still watching commit notifications a minute into PostgreSQL's silence")
		}
	}

	// A caller that gives up before UnavailableWait gets its own error, not ErrUnavailable.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := s.GetStream(cctx, "cam"); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetStream cancelled by its caller with PostgreSQL silent: %v, want context.Canceled", err)
	}
}

// TestSilentObjectStore: an object store that goes silent is ErrUnavailable within
// UnavailableWait for a read of a fragment's bytes (GetMedia, GetMediaForFragmentList, HLS),
// not a GET that waits for TCP to give up.
func TestSilentObjectStore(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cfg := testConfig(t)
	cfg.UnavailableWait = 3 * time.Second
	var s3Link *backends.Link
	cfg.Objects.Endpoint, s3Link = backends.Through(t, cfg.Objects.Endpoint)
	s := openStore(t, cfg)
	t.Cleanup(func() { s.Close() })
	t.Cleanup(func() { s3Link.Thaw(t) })
	ctx := t.Context()
	if err := s.CreateStream(ctx, store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	n, wait := appendAt(t, s, "cam", base)
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	s3Link.Freeze(t)
	// Only so that the test fails instead of hanging: no timing is asserted.
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, _, err := s.AppendPayload(tctx, "cam", n, nil); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("AppendPayload with the object store silent: %v, want ErrUnavailable", err)
	}
}
