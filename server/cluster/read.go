package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/internal/record"
	"github.com/openkvs/kvs/server/store"
)

// fragmentColumns are selected as f.* of kvs_fragments, in scanMeta's order.
const fragmentColumns = `f.number, f.server_ns, f.producer_ns, f.duration_ns, f.size`

func scanMeta(row pgx.Row) (store.FragmentMeta, error) {
	var number, sns, pns, dns, size int64
	if err := row.Scan(&number, &sns, &pns, &dns, &size); err != nil {
		return store.FragmentMeta{}, err
	}
	return store.FragmentMeta{Number: uint64(number), ServerTime: store.FromUnixNanos(sns),
		ProducerTime: store.FromUnixNanos(pns), Duration: time.Duration(dns), Size: size}, nil
}

// streamID returns the id of the named stream, ErrStreamNotFound when there is none.
func (s *Store) streamID(ctx context.Context, name string) (int64, error) {
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM kvs_streams WHERE name = $1`, name).Scan(&id)
	if err == pgx.ErrNoRows {
		return 0, fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
	}
	return id, dbErr(ctx, "stream "+name, err)
}

// metas runs a query of fragment rows (fragmentColumns) on stream name's id ($1).
func (s *Store) metas(ctx context.Context, name, query string, args ...any) ([]store.FragmentMeta, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	id, err := s.streamID(ctx, name)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, query, append([]any{id}, args...)...)
	if err != nil {
		return nil, dbErr(ctx, "fragments of "+name, err)
	}
	defer rows.Close()
	out := []store.FragmentMeta{}
	for rows.Next() {
		m, err := scanMeta(rows)
		if err != nil {
			return nil, dbErr(ctx, "fragments of "+name, err)
		}
		out = append(out, m)
	}
	return out, dbErr(ctx, "fragments of "+name, rows.Err())
}

func limitClause(limit int) string {
	if limit <= 0 {
		return ""
	}
	return " LIMIT " + strconv.Itoa(limit)
}

// Range implements store.Store.
func (s *Store) Range(ctx context.Context, name string, from uint64, limit int) ([]store.FragmentMeta, error) {
	return s.metas(ctx, name, `SELECT `+fragmentColumns+` FROM kvs_fragments f WHERE f.stream_id = $1 AND f.number >= $2
		ORDER BY f.number`+limitClause(limit), int64(min(from, 1<<63-1)))
}

// TimeRange implements store.Store, on the (stream, time, number) indexes.
func (s *Store) TimeRange(ctx context.Context, name string, kind store.TimeKind, start, end time.Time, after store.Cursor, limit int) ([]store.FragmentMeta, error) {
	var col string
	switch kind {
	case store.ServerTime:
		col = "server_ns"
	case store.ProducerTime:
		col = "producer_ns"
	default:
		return nil, fmt.Errorf("cluster: time range: unknown time kind %d", kind)
	}
	return s.metas(ctx, name, `SELECT `+fragmentColumns+` FROM kvs_fragments f WHERE f.stream_id = $1
		AND f.`+col+` >= $2 AND f.`+col+` <= $3 AND (f.`+col+`, f.number) > ($4, $5)
		ORDER BY f.`+col+`, f.number`+limitClause(limit),
		store.UnixNanos(start), store.UnixNanos(end), store.UnixNanos(after.Time), int64(min(after.Number, 1<<63-1)))
}

// First implements store.Store.
func (s *Store) First(ctx context.Context, name string) (store.FragmentMeta, error) {
	return s.one(ctx, name, `SELECT `+fragmentColumns+` FROM kvs_fragments f WHERE f.stream_id = $1 ORDER BY f.number LIMIT 1`)
}

// Last implements store.Store.
func (s *Store) Last(ctx context.Context, name string) (store.FragmentMeta, error) {
	return s.one(ctx, name, `SELECT `+fragmentColumns+` FROM kvs_fragments f WHERE f.stream_id = $1 ORDER BY f.number DESC LIMIT 1`)
}

// Fragment implements store.Store.
func (s *Store) Fragment(ctx context.Context, name string, number uint64) (store.FragmentMeta, error) {
	return s.one(ctx, name, `SELECT `+fragmentColumns+` FROM kvs_fragments f WHERE f.stream_id = $1 AND f.number = $2`, int64(min(number, 1<<63-1)))
}

func (s *Store) one(ctx context.Context, name, query string, args ...any) (store.FragmentMeta, error) {
	ms, err := s.metas(ctx, name, query, args...)
	if err != nil {
		return store.FragmentMeta{}, err
	}
	if len(ms) == 0 {
		return store.FragmentMeta{}, fmt.Errorf("%w: %s", store.ErrFragmentNotFound, name)
	}
	return ms[0], nil
}

// Open implements store.Store. The payload is read whole (one ranged GET) before Open returns,
// so the reader stays valid when the fragment is purged meanwhile.
func (s *Store) Open(ctx context.Context, name string, number uint64) (io.ReadCloser, store.FragmentMeta, error) {
	b, meta, err := s.AppendPayload(ctx, name, number, nil)
	if err != nil {
		return nil, meta, err
	}
	return io.NopCloser(bytes.NewReader(b)), meta, nil
}

// AppendPayload implements store.Store: one ranged GET of the fragment's bytes in its batch
// object, checked against the CRC-32C the index keeps.
func (s *Store) AppendPayload(ctx context.Context, name string, number uint64, b []byte) ([]byte, store.FragmentMeta, error) {
	if s.isClosed() {
		return b, store.FragmentMeta{}, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx) // the lookup, the GET and the read of its body
	defer cancel()
	var (
		id                  int64
		key                 *string
		off, crc, num, size *int64
		sns, pns, dns       *int64
	)
	err := s.pool.QueryRow(ctx, `SELECT s.id, o.key, f.object_offset, f.crc, f.number, f.server_ns, f.producer_ns, f.duration_ns, f.size
		FROM kvs_streams s LEFT JOIN kvs_fragments f ON f.stream_id = s.id AND f.number = $2
		LEFT JOIN kvs_objects o ON o.id = f.object_id WHERE s.name = $1`,
		name, int64(min(number, 1<<63-1))).Scan(&id, &key, &off, &crc, &num, &sns, &pns, &dns, &size)
	switch {
	case err == pgx.ErrNoRows:
		return b, store.FragmentMeta{}, fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
	case err != nil:
		return b, store.FragmentMeta{}, dbErr(ctx, "fragment of "+name, err)
	case key == nil || num == nil:
		return b, store.FragmentMeta{}, fmt.Errorf("%w: %s fragment %d", store.ErrFragmentNotFound, name, number)
	}
	meta := store.FragmentMeta{Number: uint64(*num), ServerTime: store.FromUnixNanos(*sns), ProducerTime: store.FromUnixNanos(*pns),
		Duration: time.Duration(*dns), Size: *size}
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Objects.Bucket), Key: key,
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", *off, *off+*size-1))})
	if err != nil {
		if ctx.Err() != nil && context.Cause(ctx) != errNoAnswer {
			return b, meta, ctx.Err()
		}
		var gone *s3types.NoSuchKey
		if errors.As(err, &gone) {
			// Purged between the lookup above and this GET (retention deletes an object in the
			// pass that deletes its last row): gone, as the store's contract says, not a failure.
			return b, meta, fmt.Errorf("%w: %s fragment %d (object %s deleted)", store.ErrFragmentNotFound, name, number, *key)
		}
		return b, meta, unavailable("object store: GET "+*key, err)
	}
	defer out.Body.Close()
	start := len(b)
	b = append(b, make([]byte, *size)...)
	if _, err := io.ReadFull(out.Body, b[start:]); err != nil {
		if ctx.Err() != nil && context.Cause(ctx) != errNoAnswer {
			return b[:start], meta, ctx.Err()
		}
		return b[:start], meta, unavailable("object store: GET "+*key, err)
	}
	if crc32.Checksum(b[start:], record.Castagnoli) != uint32(*crc) {
		return b[:start], meta, fmt.Errorf("%w: %s fragment %d in %s", store.ErrCorrupt, name, number, *key)
	}
	return b, meta, nil
}
