package cluster

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/server/store"
)

// cleanupLock is the advisory lock that lets one node at a time run a step of retention and object
// cleanup (every node's server calls EnforceRetention on its schedule; a node that finds another's
// step running waits for it, up to cleanupWait, and then runs its own, which finds little left
// to do: a pass that skipped instead would make an UpdateDataRetention decrease, whose purge is
// such a pass, answer with the expired fragments still listed). Like every kvs lock, it is the
// cluster's: its second key is the schema's (schemaLock).
const (
	cleanupLock     = 0x6b76735f       // "kvs_"
	cleanupWait     = "30s"            // lock_timeout while waiting for another node's step
	cleanupWaitTime = 30 * time.Second // cleanupWait
)

// Object cleanup timing: an object no fragment refers to any more is deleted once it is older
// than objectGrace (a batch being committed has its row only after the commit); objects a node PUT but never
// committed (it died or lost its backends between the PUT and the commit) are found by listing
// the recent hours' prefixes and deleted once older than orphanAge (by the object store's clock),
// every orphanEvery. A reader that looked a fragment up just before its purge gets
// ErrFragmentNotFound from the GET.
const (
	objectsPerQuery = 1000 // Store.objectsPerQuery
	maxObjectRounds = 100  // per pass: 100,000 objects a minute
	objectGrace     = 2 * time.Minute
	orphanAge       = 10 * time.Minute
	orphanEvery     = 10 * time.Minute
)

// unreferencedObjects lists up to $2 objects older than $1 seconds that no fragment refers to.
const unreferencedObjects = `SELECT key FROM kvs_objects o WHERE o.created_at < now() - $1::float8 * interval '1 second'
	AND NOT EXISTS (SELECT 1 FROM kvs_fragments f WHERE f.object_id = o.id) LIMIT $2`

// EnforceRetention implements store.Store: it deletes the index rows of fragments older than
// their stream's retention, as of now, and of the oldest fragments of each stream over its
// kvs:max-bytes cap (not in the count), then the objects no fragment refers to any more (a batch
// object holds several streams' fragments and goes when its last one expires), and now and then
// the objects that were PUT but never committed. The rows of deleted streams (purgeDropped) and
// the expired rows go in steps (purgeExpired),
// the rest in one transaction; one node at a time runs a step or the rest, the others wait their
// turn (cleanupLock).
func (s *Store) EnforceRetention(ctx context.Context, now time.Time) (int, error) {
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	deleted, err := s.purgeExpired(ctx, now)
	if err != nil {
		return int(deleted), err
	}
	// After the expired rows, which readers still see (an UpdateDataRetention decrease's purge
	// has a short wait): no reader sees a deleted stream's.
	if err := s.purgeDropped(ctx); err != nil {
		return int(deleted), err
	}
	capped, err := s.applyCaps(ctx)
	for _, c := range capped {
		s.metrics.deletedFragments.WithLabelValues("stream_cap").Add(float64(c.fragments))
		s.metrics.deletedBytes.WithLabelValues("stream_cap").Add(float64(c.bytes))
		s.log.Info("cluster: deleted the oldest fragments of a stream for its byte cap", "reason", "stream_cap",
			"stream", c.name, "max_bytes", c.limit, "fragments", c.fragments, "bytes", c.bytes)
	}
	if err != nil {
		return int(deleted), err
	}
	var doomed []string
	err = s.cleanupStep(ctx, "retention", func(ctx context.Context, tx pgx.Tx) error {
		// Nodes that stopped beating a day ago (killed, not stopped) leave the list.
		if _, err := tx.Exec(ctx, `DELETE FROM kvs_nodes n WHERE heartbeat_at < now() - interval '1 day'
			AND NOT EXISTS (SELECT 1 FROM kvs_streams s WHERE s.owner = n.id)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, unreferencedObjects, s.objectGrace.Seconds(), s.objectsPerQuery)
		if err != nil {
			return err
		}
		doomed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return int(deleted), err
	}
	// The objects no fragment refers to go, objectsPerQuery at a time: a pass goes on while a
	// query comes back full (a pass a minute deleting at most 1000 fell behind for good at about
	// 17 new objects a second, e.g. --flush-interval 0 and a few dozen cameras).
	for round := 0; ; round++ {
		if err := s.deleteObjects(ctx, doomed); err != nil {
			return int(deleted), err
		}
		if len(doomed) > 0 {
			if err := s.forgetObjects(ctx, doomed); err != nil {
				return int(deleted), err
			}
			s.metrics.objectsDeleted.Add(float64(len(doomed)))
			s.log.Info("cluster: objects deleted", "objects", len(doomed))
		}
		if len(doomed) < s.objectsPerQuery || round == maxObjectRounds-1 || ctx.Err() != nil {
			break
		}
		var err error
		if doomed, err = s.unreferenced(ctx); err != nil {
			return int(deleted), err
		}
	}
	if time.Since(s.lastOrphanSweep()) > s.orphanEvery {
		if err := s.sweepOrphans(ctx); err != nil {
			s.log.Warn("cluster: orphan sweep", "err", err)
		}
	}
	return int(deleted), nil
}

// purgeRows is about how many expired fragment rows one step of a retention pass deletes, in a
// transaction of its own. A pass used to delete them all in one statement under the pass's
// timeout (cleanupWait + UnavailableWait): at 1.2–2.4 s per million rows here, a big purge (an
// UpdateDataRetention decrease over a day of 1 s fragments from a few hundred cameras, tens of
// millions of rows) failed the same way on every pass, and nothing expired any more; a database
// with a statement_timeout failed sooner. In steps, each committed, a pass always gets on, and
// another node waiting for its own pass runs between two steps (Store.purgeRows; tests shorten
// it).
//
// A step is a slice of server time across every stream, oldest first, not a stream at a time:
// the streams' uploads are committed side by side, so a heap page holds rows of many streams
// from about one moment, and deleting by stream dirtied each page once per stream (measured by
// hand: 2 M rows of 200 streams, 15–20× the time of one DELETE). The slice is sized from the last
// step's rows per second of server time.
const (
	purgeRows  = 50_000
	purgeSlice = time.Minute // the first step's slice: a pass a minute deletes about a minute
)

// purgeExpired deletes the rows of the fragments older than their stream's retention as of now,
// in steps of about s.purgeRows (each its own transaction under the cleanup lock); it returns how
// many it deleted (counted in the metrics, with their bytes, step by step).
func (s *Store) purgeExpired(ctx context.Context, now time.Time) (deleted int64, err error) {
	todo, from, err := s.expiring(ctx, now)
	if err != nil || len(todo) == 0 {
		return 0, err
	}
	slice := int64(purgeSlice)
	for len(todo) > 0 {
		upTo := from + slice
		ids, cuts := make([]int64, len(todo)), make([]int64, len(todo))
		for i, e := range todo {
			ids[i], cuts[i] = e.id, min(e.cut, upTo)
		}
		var n, b int64
		err := s.cleanupStep(ctx, "retention", func(ctx context.Context, tx pgx.Tx) error {
			// Each stream's cutoff as of its retention now, too: one increased since the pass
			// began keeps what it keeps from then on (TestRetentionIncreaseDuringPass).
			return tx.QueryRow(ctx, `WITH d AS (DELETE FROM kvs_fragments f
					USING unnest($1::bigint[], $2::bigint[]) AS c(id, cut), kvs_streams s
					WHERE f.stream_id = c.id AND s.id = c.id
						AND f.server_ns < least(c.cut, $3::bigint - s.retention_hours::bigint * 3600000000000) RETURNING f.size)
				SELECT count(*), coalesce(sum(size), 0) FROM d`, ids, cuts, store.UnixNanos(now)).Scan(&n, &b)
		})
		if err != nil {
			return deleted, err
		}
		deleted += n
		s.metrics.deletedFragments.WithLabelValues("retention").Add(float64(n))
		s.metrics.deletedBytes.WithLabelValues("retention").Add(float64(b))
		// The streams whose cutoff the slice reached are done.
		todo = slices.DeleteFunc(todo, func(e expiring) bool { return e.cut <= upTo })
		if len(todo) == 0 {
			return deleted, nil
		}
		if h := s.testHookCleanupStep; h != nil {
			h("expired", n)
		}
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		from = upTo
		if n == 0 {
			// A gap in server time: on from the oldest row left.
			if todo, from, err = s.expiring(ctx, now); err != nil || len(todo) == 0 {
				return deleted, err
			}
			continue
		}
		slice = nextSlice(slice, n, s.purgeRows)
	}
	return deleted, nil
}

// maxSlice bounds a purge step's slice of server time (far beyond any retention): from + slice
// stays within int64 nanoseconds.
const maxSlice = int64(100 * 365 * 24 * time.Hour)

// nextSlice is the slice of the step after one of slice that deleted n > 0 rows: about rows at
// that step's rate, at most four times slice, at least 1 ms. In floating point: slice × rows
// overflowed int64 past about 51 h of slice (sparse rows widen it), and the slice fell to 1 ms,
// a pass then creeping on a row or two a step (TestRetentionSparseRowsFewSteps).
func nextSlice(slice, n int64, rows int) int64 {
	next := min(4*float64(slice), float64(slice)*float64(rows)/float64(n), float64(maxSlice))
	return max(int64(time.Millisecond), int64(next))
}

// expiring is a stream with fragments older than its retention (purgeExpired).
type expiring struct{ id, cut, oldest int64 }

// expiring returns each stream that has a fragment older than its cutoff as of now, with its
// cutoff and oldest server time (from kvs_fragments_server), and the oldest of those. A stream
// whose retention was lowered to 0 keeps nothing older than now.
func (s *Store) expiring(ctx context.Context, now time.Time) (todo []expiring, oldest int64, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT s.id, c.cut, x.oldest FROM kvs_streams s
		CROSS JOIN LATERAL (SELECT $1::bigint - s.retention_hours::bigint * 3600000000000 AS cut) c
		CROSS JOIN LATERAL (SELECT min(server_ns) AS oldest FROM kvs_fragments WHERE stream_id = s.id) x
		WHERE x.oldest < c.cut`, store.UnixNanos(now))
	if err == nil {
		todo, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (e expiring, err error) {
			return e, r.Scan(&e.id, &e.cut, &e.oldest)
		})
	}
	if err != nil || len(todo) == 0 {
		return nil, 0, dbErr(ctx, "retention", err)
	}
	oldest = todo[0].oldest
	for _, e := range todo {
		oldest = min(oldest, e.oldest)
	}
	return todo, oldest, nil
}

// cleanupStep runs step in a transaction of its own under the cleanup lock: it may wait its turn
// (cleanupWait) behind another node's step, then has UnavailableWait for its own work. what
// names it in errors.
func (s *Store) cleanupStep(ctx context.Context, what string, step func(context.Context, pgx.Tx) error) error {
	ctx, cancel := context.WithTimeoutCause(ctx, cleanupWaitTime+s.cfg.UnavailableWait, errNoAnswer)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+cleanupWait+`'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, `+schemaLock+`)`, cleanupLock); err != nil {
			return err
		}
		return step(ctx, tx)
	})
	return dbErr(ctx, what, err)
}

// forgetObjects deletes the rows of objects deleted, unless a fragment refers to one again.
func (s *Store) forgetObjects(ctx context.Context, keys []string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM kvs_objects o WHERE key = ANY($1)
		AND NOT EXISTS (SELECT 1 FROM kvs_fragments f WHERE f.object_id = o.id)`, keys)
	return dbErr(ctx, "object cleanup", err)
}

// unreferenced lists the next objectsPerQuery objects of unreferencedObjects.
func (s *Store) unreferenced(ctx context.Context) ([]string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, unreferencedObjects, s.objectGrace.Seconds(), s.objectsPerQuery)
	if err != nil {
		return nil, dbErr(ctx, "object cleanup", err)
	}
	doomed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return doomed, dbErr(ctx, "object cleanup", err)
}

func (s *Store) deleteObjects(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		bctx, cancel := s.bound(ctx)
		out, err := s.s3.DeleteObjects(bctx, &s3.DeleteObjectsInput{Bucket: aws.String(s.cfg.Objects.Bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		cancel()
		if err != nil {
			return unavailable("object store: delete objects", err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				return unavailable("object store: delete "+aws.ToString(e.Key), errString(aws.ToString(e.Message)))
			}
		}
		keys = keys[n:]
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

func (s *Store) lastOrphanSweep() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orphanSweep
}

// sweepOrphans deletes the objects of the last three hours' prefixes that are older than
// orphanAge and that no index row names.
func (s *Store) sweepOrphans(ctx context.Context) error {
	s.mu.Lock()
	s.orphanSweep = time.Now()
	s.mu.Unlock()
	var orphans []string
	now := time.Now().UTC()
	for h := 3; h >= 0; h-- {
		prefix := s.cfg.Objects.Prefix + "data/" + now.Add(-time.Duration(h)*time.Hour).Format("2006010215") + "/"
		p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Objects.Bucket), Prefix: aws.String(prefix)})
		for p.HasMorePages() {
			pctx, cancel := s.bound(ctx)
			page, err := p.NextPage(pctx)
			cancel()
			if err != nil {
				return unavailable("object store: list "+prefix, err)
			}
			// An object's age by the object store's own clock (LastModified against the Date of
			// this answer), not this node's: a node whose clock ran ahead took objects between
			// their PUT and their commit for orphans, and deleted committed fragments' bytes.
			// Date has whole seconds (cut), LastModified is to the second too (versitygw
			// rounds it): an age may come out up to two seconds short, nothing next to
			// orphanAge's minutes.
			storeNow, ok := awsmiddleware.GetServerTime(page.ResultMetadata)
			if ok {
				storeNow = storeNow.Add(2 * time.Second)
			} else {
				storeNow = time.Now()
			}
			var keys []string
			for _, o := range page.Contents {
				if o.LastModified != nil && storeNow.Sub(*o.LastModified) > s.orphanAge {
					keys = append(keys, aws.ToString(o.Key))
				}
			}
			if len(keys) == 0 {
				continue
			}
			found, err := s.unknownObjects(ctx, keys)
			if err != nil {
				return err
			}
			orphans = append(orphans, found...)
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	if err := s.deleteObjects(ctx, orphans); err != nil {
		return err
	}
	s.metrics.objectsDeleted.Add(float64(len(orphans)))
	s.log.Info("cluster: orphan objects deleted (PUT, never committed)", "objects", len(orphans), "first", strings.Join(orphans[:1], ""))
	return nil
}

// unknownObjects returns those of keys that kvs_objects does not list.
func (s *Store) unknownObjects(ctx context.Context, keys []string) ([]string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT k FROM unnest($1::text[]) AS k WHERE NOT EXISTS (SELECT 1 FROM kvs_objects WHERE key = k)`, keys)
	if err != nil {
		return nil, dbErr(ctx, "orphan sweep", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return found, dbErr(ctx, "orphan sweep", err)
}
