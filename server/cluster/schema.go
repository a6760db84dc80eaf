package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema versions, applied in order, each once. A migration is never edited
// after it is released: a change is a new one. Every table is prefixed kvs_, so a database (or
// schema, through search_path) can hold other things too.
//
// Times of fragments and streams are Unix nanoseconds (bigint), the precision the store API
// keeps; lease and heartbeat times are timestamptz from the database's own clock (now()), so
// that nodes with skewed clocks agree on who holds a lease.
var migrations = []string{
	// 1: the registry, the fragment index, objects, nodes and leases.
	`CREATE TABLE kvs_nodes (
		id           text PRIMARY KEY,
		url          text NOT NULL,
		started_at   timestamptz NOT NULL DEFAULT now(),
		heartbeat_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kvs_streams (
		id              bigserial PRIMARY KEY,
		name            text NOT NULL UNIQUE,
		arn             text NOT NULL,
		device_name     text NOT NULL,
		media_type      text NOT NULL,
		kms_key_id      text NOT NULL,
		version         text NOT NULL,
		status          text NOT NULL,
		creation_ns     bigint NOT NULL,
		retention_hours integer NOT NULL,
		tags            jsonb,
		owner           text,
		epoch           bigint NOT NULL DEFAULT 0,
		lease_expires   timestamptz,
		number_hwm      bigint NOT NULL DEFAULT 0
	);
	CREATE TABLE kvs_objects (
		id         bigserial PRIMARY KEY,
		key        text NOT NULL UNIQUE,
		size       bigint NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kvs_fragments (
		stream_id     bigint NOT NULL REFERENCES kvs_streams (id) ON DELETE CASCADE,
		number        bigint NOT NULL,
		server_ns     bigint NOT NULL,
		producer_ns   bigint NOT NULL,
		duration_ns   bigint NOT NULL,
		size          bigint NOT NULL,
		object_id     bigint NOT NULL,
		object_offset bigint NOT NULL,
		crc           bigint NOT NULL,
		PRIMARY KEY (stream_id, number)
	);
	CREATE INDEX kvs_fragments_server ON kvs_fragments (stream_id, server_ns, number);
	CREATE INDEX kvs_fragments_producer ON kvs_fragments (stream_id, producer_ns, number);
	CREATE INDEX kvs_fragments_object ON kvs_fragments (object_id);
	CREATE TABLE kvs_settings (
		key   text PRIMARY KEY,
		value text NOT NULL
	);`,
	// 2: the number_hwm of the last stream deleted under each name, where the numbers of a
	// stream created again under it start (store.Store.NextNumber).
	`CREATE TABLE kvs_retired_names (
		name       text PRIMARY KEY,
		number_hwm bigint NOT NULL
	);`,
	// 3: a deleted stream's fragment rows go in steps after its row (purgeDropped), not with it:
	// the ON DELETE CASCADE deleted them all in DeleteStream's one statement, which past a few
	// million rows ran out of its UnavailableWait on every try. Its id stays in
	// kvs_dropped_streams until they are gone (ids are never reused: a stream created again
	// under the name has another).
	`ALTER TABLE kvs_fragments DROP CONSTRAINT IF EXISTS kvs_fragments_stream_id_fkey;
	CREATE TABLE kvs_dropped_streams (
		id bigint PRIMARY KEY
	);`,
}

// migrationLock is the advisory lock key under which migrations run, so that nodes starting at
// once apply each migration exactly once: one waits while the other migrates, then finds
// nothing to do.
const migrationLock = 0x6b76736d // "kvsm"

// schemaLock is the second key of kvs's advisory locks: the cluster's schema (where search_path
// puts its tables). Advisory locks are the database's, so clusters in schemas of one database
// (the tests' are) held each other's: a node skipped its retention run while another cluster's
// ran (EnforceRetention returned 0).
const schemaLock = `hashtext(current_schema())`

// migrate brings the schema up to date and returns the cluster's shared settings.
func migrate(ctx context.Context, pool *pgxpool.Pool) (sessionKey []byte, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, `+schemaLock+`)`, migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kvs_schema (version integer NOT NULL)`); err != nil {
			return err
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM kvs_schema`).Scan(&version)
		switch {
		case err == pgx.ErrNoRows:
			if _, err := tx.Exec(ctx, `INSERT INTO kvs_schema VALUES (0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if version > len(migrations) {
			return fmt.Errorf("the database schema is version %d, newer than this kvs knows (%d): upgrade kvs", version, len(migrations))
		}
		for v := version; v < len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE kvs_schema SET version = $1`, len(migrations)); err != nil {
			return err
		}
		// The key that signs HLS session tokens, the same on every node.
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		if _, err := tx.Exec(ctx, `INSERT INTO kvs_settings VALUES ('session_key', $1) ON CONFLICT DO NOTHING`, hex.EncodeToString(key)); err != nil {
			return err
		}
		var hexKey string
		if err := tx.QueryRow(ctx, `SELECT value FROM kvs_settings WHERE key = 'session_key'`).Scan(&hexKey); err != nil {
			return err
		}
		sessionKey, err = hex.DecodeString(hexKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: schema: %w", err)
	}
	return sessionKey, nil
}
