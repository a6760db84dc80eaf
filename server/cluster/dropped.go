package cluster

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// purgeDropped deletes the fragment rows of the deleted streams (kvs_dropped_streams, see
// DeleteStream), oldest numbers first, s.purgeRows rows a step, each step a transaction of its own
// under the cleanup lock as purgeExpired's; a stream's id leaves kvs_dropped_streams in the step
// that finds its last rows. A stream of tens of millions of rows takes some hundreds of steps,
// each well within its bound, where one statement took minutes.
//
// It first records the ids of the streams whose rows are left without their stream's row and
// without a record: deleted by a node of an earlier kvs during a rolling upgrade (its
// DeleteStream left the rows to the cascade that migration 3 dropped). Their rows were left for
// ever, and their objects with them. The stream ids in kvs_fragments are read by a loose index
// scan (one lookup of the primary key per stream id), a few milliseconds a pass. A row without
// its stream's is a deleted stream's: a commit inserts a fragment's row only with its stream's row
// locked (FOR SHARE), so the stream's row is in any snapshot that sees the fragment's.
func (s *Store) purgeDropped(ctx context.Context) error {
	lctx, cancel := s.bound(ctx)
	_, err := s.pool.Exec(lctx, `WITH RECURSIVE ids (id) AS (SELECT min(stream_id) FROM kvs_fragments
			UNION ALL SELECT (SELECT min(stream_id) FROM kvs_fragments WHERE stream_id > ids.id) FROM ids WHERE ids.id IS NOT NULL)
		INSERT INTO kvs_dropped_streams (id) SELECT id FROM ids
		WHERE id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM kvs_streams s WHERE s.id = ids.id)
		ON CONFLICT DO NOTHING`)
	var rows pgx.Rows
	if err == nil {
		rows, err = s.pool.Query(lctx, `SELECT id FROM kvs_dropped_streams ORDER BY id`)
	}
	var ids []int64
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	}
	err = dbErr(lctx, "deleted streams' fragments", err)
	cancel()
	if err != nil {
		return err
	}
	for _, id := range ids {
		var total int64
		for done := false; !done; {
			var n int64
			err := s.cleanupStep(ctx, "deleted streams' fragments", func(ctx context.Context, tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, `DELETE FROM kvs_fragments WHERE stream_id = $1
					AND number = ANY(ARRAY(`+firstRows+` ORDER BY number LIMIT $2))`, id, s.purgeRows)
				if err != nil {
					return err
				}
				n = tag.RowsAffected()
				if done = n < int64(s.purgeRows); done {
					_, err = tx.Exec(ctx, `DELETE FROM kvs_dropped_streams WHERE id = $1`, id)
				}
				return err
			})
			if err != nil {
				return err
			}
			total += n
			if h := s.testHookCleanupStep; h != nil {
				h("dropped", n)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if total > 0 {
			s.log.Info("cluster: deleted the fragment rows of a deleted stream", "stream_id", id, "fragments", total)
		}
	}
	return nil
}

// firstRows begins the query of a step's rows (purgeDropped, applyCaps): the numbers of stream
// $1, read in the primary key's order. The step deletes them by key (= ANY of the array): an
// index scan on the primary key, whatever the planner makes of a join's sizes.
const firstRows = `SELECT number FROM kvs_fragments WHERE stream_id = $1`
