package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel returns the commit notification channel of the cluster whose tables are in the
// connection's schema. Notifications go to every listener of a database, whatever its
// search_path: clusters that share a database in different schemas (the tests do; so may a
// user) must not hear each other's commits, which would tell a node's live readers of a stream
// "cam" about another cluster's "cam". So the channel carries the schema: kvs_commits:SCHEMA,
// or a digest of it where that would be over PostgreSQL's 63 bytes for a name.
func notifyChannel(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var schema string
	if err := pool.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&schema); err != nil {
		return "", fmt.Errorf("cluster: PostgreSQL schema: %w", err)
	}
	channel := "kvs_commits:" + schema
	if len(channel) > 63 {
		sum := sha256.Sum256([]byte(schema))
		channel = "kvs_commits:" + hex.EncodeToString(sum[:16])
	}
	return channel, nil
}

// watcher holds the node's LISTEN connection: every commit of any node NOTIFYs the cluster's
// channel (notifyChannel) with the newest committed fragment number of each stream in it, and the
// watcher passes that on to the functions registered with Watch.
type watcher struct {
	s    *Store
	mu   sync.Mutex
	next int
	fns  map[int]func(stream string, last uint64)
	up   bool // LISTENing now
}

func (w *watcher) init(s *Store) {
	w.s = s
	w.fns = map[int]func(string, uint64){}
}

// Watch calls fn(stream, last) after each commit anywhere in the cluster, with the stream's
// newest committed fragment number, and, after the watch connection was lost and came back,
// once with last 0 for every stream ("look again": notices may have been missed). fn must not
// block. stop ends the watch.
func (s *Store) Watch(fn func(stream string, last uint64)) (stop func()) {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.next
	w.next++
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fns, id)
	}
}

func (w *watcher) dispatch(stream string, last uint64) {
	w.mu.Lock()
	fns := make([]func(string, uint64), 0, len(w.fns))
	for _, fn := range w.fns {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(stream, last)
	}
}

// run keeps a LISTEN connection open, reconnecting after failures, until ctx ends.
func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := w.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		w.s.log.Warn("cluster: commit notifications lost; reconnecting", "err", err)
		w.dispatch("", 0) // everyone looks again
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (w *watcher) listen(ctx context.Context) error {
	// Taking a connection and the LISTEN are bounded (a silent PostgreSQL held them until TCP gave
	// up); the wait for notices below is not: it is the watch.
	setup, cancel := w.s.bound(ctx)
	defer cancel()
	conn, err := w.s.pool.Acquire(setup)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(setup, `LISTEN `+pgx.Identifier{w.s.notify}.Sanitize()); err != nil {
		return err
	}
	cancel()
	defer func() {
		// The connection goes back to the pool: stop listening on it first.
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := conn.Exec(c, `UNLISTEN *`); err != nil {
			conn.Conn().Close(c) // leaves the pool broken: it is discarded
		}
	}()
	w.setUp(true)
	defer w.setUp(false)
	for {
		// A wait ends after UnavailableWait without a notice to check that PostgreSQL still
		// answers on this connection: a silent one (packets dropped, nothing reset) would hold the
		// LISTEN until TCP keepalive gave up, about 5 minutes, with the node still reporting that
		// it watches (/readyz). A timed-out wait leaves the connection usable (pgconn sets a read
		// deadline; it closes the connection only on other errors).
		wait, cancel := context.WithTimeout(ctx, w.s.cfg.UnavailableWait)
		n, err := conn.Conn().WaitForNotification(wait)
		cancel()
		if err != nil && ctx.Err() == nil && pgconn.Timeout(err) {
			ping, cancel := w.s.bound(ctx)
			err = conn.Conn().Ping(ping)
			cancel()
			if err != nil {
				return fmt.Errorf("the LISTEN connection does not answer: %w", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, item := range strings.Fields(n.Payload) {
			name, num, ok := strings.Cut(item, "=")
			if !ok {
				continue
			}
			last, err := strconv.ParseUint(num, 10, 64)
			if err == nil {
				w.dispatch(name, last)
			}
		}
	}
}

func (w *watcher) setUp(up bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up = up
}

// Watching reports whether commit notifications are being received now (for /readyz and the
// console).
func (s *Store) Watching() bool {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return s.watch.up
}
