package cluster

import (
	"context"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/server/store"
)

// cappedStream is what applyCaps deleted of one stream.
type cappedStream struct {
	name             string
	limit, fragments int64
	bytes            int64
}

// applyCaps deletes the index rows of the oldest fragments of each stream tagged kvs:max-bytes
// (store.MaxBytesTag) whose payloads pass the cap, keeping the newest fragment, and returns what
// went where something did (with what it had deleted when it fails). A value the server would
// refuse is no cap.
//
// The rows go in steps of s.purgeRows, oldest first, each its own transaction under the cleanup
// lock, as purgeExpired's: one DELETE of every row over the cap, in the pass's last transaction,
// failed on every pass once a cap was lowered far below what a stream of tens of millions of rows
// held, and took the deletion of every unreferenced object of the cluster with it. A step
// deletes up to the cut: the newest number whose fragment and the newer ones pass the cap (found
// by reading back from the newest row, as far as the cap reaches), found again when the cap
// changes during the pass.
func (s *Store) applyCaps(ctx context.Context) ([]cappedStream, error) {
	lctx, cancel := s.bound(ctx)
	rows, err := s.pool.Query(lctx, `SELECT id, name FROM kvs_streams WHERE tags->>$1 IS NOT NULL ORDER BY id`, store.MaxBytesTag)
	type tagged struct {
		id   int64
		name string
	}
	var todo []tagged
	if err == nil {
		todo, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (t tagged, err error) {
			return t, r.Scan(&t.id, &t.name)
		})
	}
	err = dbErr(lctx, "stream caps", err)
	cancel()
	if err != nil {
		return nil, err
	}
	var out []cappedStream
	for _, t := range todo {
		c := cappedStream{name: t.name}
		var cut *int64 // of c.limit
		for {
			var n, b int64
			err := s.cleanupStep(ctx, "stream cap of "+t.name, func(ctx context.Context, tx pgx.Tx) error {
				n, b = 0, 0
				var v *string
				err := tx.QueryRow(ctx, `SELECT tags->>$2 FROM kvs_streams WHERE id = $1`, t.id, store.MaxBytesTag).Scan(&v)
				if err == pgx.ErrNoRows || (err == nil && v == nil) {
					cut = nil // deleted, or no cap any more
					return nil
				}
				if err != nil {
					return err
				}
				limit, perr := store.ParseSize(*v)
				if perr != nil {
					cut = nil
					return nil
				}
				if cut == nil || limit != c.limit {
					c.limit, cut = limit, nil
					var err error
					if cut, err = capCut(ctx, tx, t.id, limit); err != nil || cut == nil {
						return err
					}
				}
				return tx.QueryRow(ctx, `WITH d AS (DELETE FROM kvs_fragments WHERE stream_id = $1
						AND number = ANY(ARRAY(`+firstRows+` AND number <= $2 ORDER BY number LIMIT $3)) RETURNING size)
					SELECT count(*), coalesce(sum(size), 0) FROM d`, t.id, *cut, s.purgeRows).Scan(&n, &b)
			})
			if err != nil {
				if c.fragments > 0 {
					out = append(out, c)
				}
				return out, err
			}
			c.fragments += n
			c.bytes += b
			if h := s.testHookCleanupStep; h != nil {
				h("cap", n)
			}
			if cut == nil || n < int64(s.purgeRows) {
				break
			}
			if err := ctx.Err(); err != nil {
				return append(out, c), err
			}
		}
		if c.fragments > 0 {
			out = append(out, c)
		}
	}
	return out, nil
}

// capCutPage is how many rows capCut reads a query.
const capCutPage = 1000

// capCut returns the newest number of stream id whose fragment and the newer ones pass limit
// bytes, not the newest fragment's; nil when the stream fits. It reads back from the newest row, a
// page at a time by the primary key, as far as the cap reaches (the rows kept and a page more),
// each page a query with a LIMIT: not the whole stream, as the window function over it did.
func capCut(ctx context.Context, tx pgx.Tx, id, limit int64) (*int64, error) {
	var sum int64
	newest := true
	upTo := int64(math.MaxInt64)
	for {
		rows, err := tx.Query(ctx, `SELECT number, size FROM kvs_fragments WHERE stream_id = $1 AND number <= $2
			ORDER BY number DESC LIMIT $3`, id, upTo, capCutPage)
		if err != nil {
			return nil, err
		}
		n := 0
		var number, size int64
		_, err = pgx.ForEachRow(rows, []any{&number, &size}, func() error {
			n++
			if sum += size; sum > limit && !newest {
				return errCutFound
			}
			newest = false
			upTo = number - 1
			return nil
		})
		switch {
		case err == errCutFound:
			return &number, nil
		case err != nil:
			return nil, err
		case n < capCutPage:
			return nil, nil
		}
	}
}

// errCutFound ends capCut's reading of a page.
var errCutFound = errString("cut found")
