package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openkvs/kvs/server/store"
)

// Store is a store.Store shared by the nodes of a cluster: the registry and the fragment index in
// PostgreSQL, the fragment bytes in objects of an S3-compatible store, one writer per stream
// under a lease. It also answers the questions of cluster membership the server asks (Acquire,
// Owner, Nodes, Watch). It is safe for concurrent use. See doc.go for the design.
type Store struct {
	cfg    Config
	log    *slog.Logger
	pool   *pgxpool.Pool
	s3     *s3.Client
	nodeID string // this process: a new id per start, so a restarted node never inherits a lease
	key    []byte // the shared HLS session key
	notify string // the commit notification channel of this cluster's schema (watch.go)

	mu     sync.Mutex
	leases map[string]*lease // by stream name: the streams this node writes
	// uploads counts by stream name the Acquire calls not yet Released.
	uploads map[string]int
	// freeing has a channel per stream whose lease is being given up, closed when its row is
	// free: take waits for it (see lease.releasing).
	freeing map[string]chan struct{}
	// testHookGiveUp, when set, runs in giveUp before the row is freed.
	testHookGiveUp atomic.Pointer[func(*lease)]
	closed         bool

	batches     batcher   // append.go
	watch       watcher   // watch.go
	orphanSweep time.Time // the last sweepOrphans (retention.go)
	// The cleanup ages (retention.go); tests shorten them.
	objectGrace, orphanAge, orphanEvery time.Duration
	objectsPerQuery                     int                           // objects deleted per query of a cleanup pass
	purgeRows                           int                           // expired fragment rows deleted per step (retention.go)
	testHookCleanupStep                 func(kind string, rows int64) // set by a test: runs after each step of a cleanup pass but purgeExpired's last ("expired"), of applyCaps ("cap") and of purgeDropped ("dropped")

	stop context.CancelFunc // ends the background loops
	bg   sync.WaitGroup

	metrics *metrics

	testCommitHook func() // set by a test before any append: runs in each commit's transaction, after the INSERT
}

// defaultMaxConns is the size of a node's PostgreSQL pool when the index URL does not set
// pool_max_conns.
const defaultMaxConns = 16

// Open connects to PostgreSQL and the object store, migrates the schema and registers this node.
// It fails when either backend cannot be reached.
func Open(ctx context.Context, c Config) (*Store, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.Index)
	if err != nil {
		return nil, fmt.Errorf("cluster: index URL: %w", err)
	}
	// 16 connections unless the URL says otherwise (pool_max_conns, e.g. to keep N nodes under
	// the server's max_connections); one of them LISTENs for the whole life of the node.
	if !strings.Contains(cfg.Index, "pool_max_conns") {
		pcfg.MaxConns = defaultMaxConns
	} else if pcfg.MaxConns < 2 {
		return nil, fmt.Errorf("cluster: index URL: pool_max_conns=%d: a node needs at least 2 connections (one LISTENs for commits)", pcfg.MaxConns)
	}
	if _, set := pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		// A node frozen inside a commit (which locks its streams' rows, see commit) must not
		// hold another node's takeover for longer than this.
		pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "30s"
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// A PostgreSQL host that does not answer at all (not even with a refusal) must not hold
		// requests and appends past their own bounded waits.
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: PostgreSQL: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cluster: PostgreSQL at %s: %w", RedactURL(cfg.Index), err)
	}
	key, err := migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	channel, err := notifyChannel(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	client, err := newS3Client(ctx, cfg.Objects, cfg.Credentials)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Log, pool: pool, s3: client, key: key, notify: channel,
		nodeID: "n-" + strings.ToLower(rand.Text()[:12]), leases: map[string]*lease{}, uploads: map[string]int{}, freeing: map[string]chan struct{}{},
		objectGrace: objectGrace, orphanAge: orphanAge, orphanEvery: orphanEvery, objectsPerQuery: objectsPerQuery, purgeRows: purgeRows, metrics: newMetrics()}
	if err := s.checkBucket(pingCtx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.metrics.register(cfg.Metrics, s); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cluster: metrics: %w", err)
	}
	if err := s.register(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	bgCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.batches.init(s)
	s.watch.init(s)
	s.bg.Go(func() { s.leaseLoop(bgCtx) })
	s.bg.Go(func() { s.batches.run(bgCtx) })
	s.bg.Go(func() { s.watch.run(bgCtx) })
	s.log.Info("cluster node started", "node", s.nodeID, "url", cfg.NodeURL, "objects", cfg.Objects.String())
	return s, nil
}

func newS3Client(ctx context.Context, o Objects, creds aws.CredentialsProvider) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(o.Region)}
	if creds != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(creds))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: S3 credentials: %w", err)
	}
	// AWS_ENDPOINT_URL and the profile's endpoint_url name one endpoint for every service: set to
	// point the AWS CLI and kvs at a kvs server, they sent the fragments' S3 requests there too.
	// The S3 client takes only S3's own settings: --objects' endpoint=, else AWS_ENDPOINT_URL_S3
	// or the profile's services section (the SDK reads those), else AWS S3.
	awsCfg.BaseEndpoint = nil
	return s3.NewFromConfig(awsCfg, func(opt *s3.Options) {
		if o.Endpoint != "" {
			opt.BaseEndpoint = aws.String(o.Endpoint)
		}
		opt.UsePathStyle = o.PathStyle
		// Each fragment carries its own CRC-32C in the index, checked on every read; the SDK's
		// default request checksum costs CPU on every PUT for nothing more.
		opt.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		opt.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// checkBucket fails Open early, with a message naming the bucket, when it cannot be reached.
func (s *Store) checkBucket(ctx context.Context) error {
	_, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Objects.Bucket)})
	var nf *types.NotFound
	switch {
	case errors.As(err, &nf):
		return fmt.Errorf("cluster: object store %s: bucket %q does not exist (kvs does not create buckets: create it first)", s.cfg.Objects, s.cfg.Objects.Bucket)
	case err != nil:
		return fmt.Errorf("cluster: object store %s: %w", s.cfg.Objects, err)
	}
	return nil
}

// Ready implements store.Store: PostgreSQL answers a ping and the object store a HEAD of the
// bucket, each within ctx (at most 5 s).
func (s *Store) Ready(ctx context.Context) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return unavailable("PostgreSQL at "+RedactURL(s.cfg.Index)+" does not answer", err)
	}
	if _, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Objects.Bucket)}); err != nil {
		return unavailable("object store "+s.cfg.Objects.String()+" does not answer for bucket "+s.cfg.Objects.Bucket, err)
	}
	return nil
}

// Stats implements store.Store with one query over the whole cluster (the same answer on every
// node): the streams, the fragments indexed and their payload bytes. It scans the fragment
// index, so callers ask now and then (the server's metrics, at most every 10 s).
func (s *Store) Stats(ctx context.Context) (store.Stats, error) {
	if s.isClosed() {
		return store.Stats{}, store.ErrClosed
	}
	var st store.Stats
	// Not the rows of deleted streams that the cleanup has not deleted yet (purgeDropped).
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM kvs_streams), count(*), coalesce(sum(size), 0) FROM kvs_fragments f
		WHERE EXISTS (SELECT 1 FROM kvs_streams s WHERE s.id = f.stream_id)`).
		Scan(&st.Streams, &st.Fragments, &st.Bytes)
	return st, dbErr(ctx, "stats", err)
}

// NodeID is this process's id in the cluster (kvs_nodes.id).
func (s *Store) NodeID() string { return s.nodeID }

// SessionKey is the key every node signs HLS session tokens with (kvs_settings).
func (s *Store) SessionKey() []byte { return s.key }

// Close flushes and commits the appends in flight (waiting at most UnavailableWait for the
// backends), gives up this node's leases and its place in the node list, and closes the
// connections. Later calls return store.ErrClosed; Close itself returns nil then.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.batches.close() // waits for every sealed batch to be committed or failed
	s.stop()
	s.bg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `UPDATE kvs_streams SET owner = NULL, lease_expires = NULL WHERE owner = $1`, s.nodeID); err != nil {
		s.log.Warn("cluster: releasing leases at close", "err", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM kvs_nodes WHERE id = $1`, s.nodeID); err != nil {
		s.log.Warn("cluster: leaving the node list", "err", err)
	}
	s.pool.Close()
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// errNoAnswer ends the contexts of bound: a backend that did not answer within UnavailableWait.
var errNoAnswer = errors.New("no answer within the unavailable wait")

// bound limits ctx to UnavailableWait for the backend calls of one operation a caller asked for.
// Neither pgx nor the S3 client times out a connection that goes silent (a network partition, a
// frozen host: nothing refused, nothing reset), and a call on one waited for TCP to give up, a
// quarter of an hour, holding a pooled connection meanwhile. dbErr (and AppendPayload, for its
// GET) report its end as store.ErrUnavailable; the end of the caller's own ctx stays the
// caller's error.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.cfg.UnavailableWait, errNoAnswer)
}

// unavailable wraps an error of a backend that could not be reached as store.ErrUnavailable (a
// retryable condition for the client), keeping the cause for the logs.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", store.ErrUnavailable, what, err)
}

// dbErr maps a PostgreSQL error: a canceled context stays itself, unless bound ended it;
// anything that is not an answer from the server (connection refused, reset, timeout, no answer
// within bound's wait), and an answer that says the server cannot serve now (transientState), is
// store.ErrUnavailable.
func dbErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		if context.Cause(ctx) == errNoAnswer {
			return unavailable("PostgreSQL: "+what+": "+errNoAnswer.Error(), err)
		}
		return ctx.Err()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !transientState(pgErr.Code) {
		return fmt.Errorf("cluster: %s: %w", what, err)
	}
	return unavailable("PostgreSQL: "+what, err)
}

// transientState reports whether a SQLSTATE says the server is going away, coming up or out of
// room, not that the statement is wrong: a restart or a failover ends the open connections with
// 57P01 (admin_shutdown) or 57P02 and refuses new ones with 57P03 (cannot_connect_now), a full
// server refuses them with 53300 (too_many_connections); class 08 is a connection exception, 40
// a transaction to run again (serialization failure, deadlock).
func transientState(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "40"), strings.HasPrefix(code, "57P"):
		return true
	case code == "53300":
		return true
	}
	return false
}

// RedactURL drops the passwords from a connection URL for messages (an error of Open, Ready's,
// which GET /readyz shows without a signature): the user's (user:password@) and a password
// parameter (?password=..., which libpq and pgx read as well), and any other parameter whose
// name says password (sslpassword=..., the client key's, which pgx and libpq read).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	q := u.Query()
	redacted := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q[k] = []string{"xxxxx"}
			redacted = true
		}
	}
	if redacted {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Registry.

const streamColumns = `id, name, arn, device_name, media_type, kms_key_id, version, status, creation_ns, retention_hours, tags`

func scanStream(row pgx.Row) (int64, store.Stream, error) {
	var (
		id      int64
		st      store.Stream
		created int64
		tags    []byte
	)
	err := row.Scan(&id, &st.Name, &st.ARN, &st.DeviceName, &st.MediaType, &st.KmsKeyID, &st.Version, &st.Status,
		&created, &st.RetentionHours, &tags)
	if err != nil {
		return 0, st, err
	}
	st.CreationTime = store.FromUnixNanos(created)
	if tags != nil {
		if err := json.Unmarshal(tags, &st.Tags); err != nil {
			return 0, st, fmt.Errorf("stream %s: tags: %w", st.Name, err)
		}
	}
	return id, st, nil
}

func tagsJSON(tags map[string]string) []byte {
	if tags == nil {
		return nil
	}
	b, _ := json.Marshal(tags) // string map: cannot fail
	return b
}

// CreateStream implements store.Store.
func (s *Store) CreateStream(ctx context.Context, st store.Stream) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	if st.Name == "" {
		return errors.New("cluster: create stream: empty name")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// A stream deleted under the name may have handed out numbers up to its number_hwm: this
	// one's first lease reserves from there.
	tag, err := s.pool.Exec(ctx, `INSERT INTO kvs_streams (name, arn, device_name, media_type, kms_key_id, version, status, creation_ns, retention_hours, tags, number_hwm)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE((SELECT number_hwm FROM kvs_retired_names WHERE name = $1), 0))
		ON CONFLICT (name) DO NOTHING`,
		st.Name, st.ARN, st.DeviceName, st.MediaType, st.KmsKeyID, st.Version, st.Status, store.UnixNanos(st.CreationTime),
		st.RetentionHours, tagsJSON(st.Tags))
	if err != nil {
		return dbErr(ctx, "create stream "+st.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", store.ErrStreamExists, st.Name)
	}
	return nil
}

// GetStream implements store.Store.
func (s *Store) GetStream(ctx context.Context, name string) (store.Stream, error) {
	if s.isClosed() {
		return store.Stream{}, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, st, err := scanStream(s.pool.QueryRow(ctx, `SELECT `+streamColumns+` FROM kvs_streams WHERE name = $1`, name))
	if err == pgx.ErrNoRows {
		return store.Stream{}, fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
	}
	return st, dbErr(ctx, "get stream "+name, err)
}

// ListStreams implements store.Store.
func (s *Store) ListStreams(ctx context.Context) ([]store.Stream, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT `+streamColumns+` FROM kvs_streams ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, dbErr(ctx, "list streams", err)
	}
	defer rows.Close()
	out := []store.Stream{}
	for rows.Next() {
		_, st, err := scanStream(rows)
		if err != nil {
			return nil, dbErr(ctx, "list streams", err)
		}
		out = append(out, st)
	}
	return out, dbErr(ctx, "list streams", rows.Err())
}

// UpdateStream implements store.Store: the row is locked (SELECT ... FOR UPDATE) while fn runs,
// so no other change comes between what fn saw and what is written.
func (s *Store) UpdateStream(ctx context.Context, name string, fn func(*store.Stream) error) (store.Stream, error) {
	if s.isClosed() {
		return store.Stream{}, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var out store.Stream
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		id, st, err := scanStream(tx.QueryRow(ctx, `SELECT `+streamColumns+` FROM kvs_streams WHERE name = $1 FOR UPDATE`, name))
		if err == pgx.ErrNoRows {
			return fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
		}
		if err != nil {
			return dbErr(ctx, "update stream "+name, err)
		}
		cp := st
		cp.Tags = cloneTags(st.Tags)
		if err := fn(&cp); err != nil {
			return err
		}
		if cp.Name != name {
			return fmt.Errorf("cluster: update stream %s: the name cannot change (to %q)", name, cp.Name)
		}
		_, err = tx.Exec(ctx, `UPDATE kvs_streams SET arn = $2, device_name = $3, media_type = $4, kms_key_id = $5, version = $6,
			status = $7, creation_ns = $8, retention_hours = $9, tags = $10 WHERE id = $1`,
			id, cp.ARN, cp.DeviceName, cp.MediaType, cp.KmsKeyID, cp.Version, cp.Status, store.UnixNanos(cp.CreationTime),
			cp.RetentionHours, tagsJSON(cp.Tags))
		if err != nil {
			return dbErr(ctx, "update stream "+name, err)
		}
		out = cp
		return nil
	})
	if err != nil && ctx.Err() != nil && !errors.Is(err, store.ErrUnavailable) {
		err = dbErr(ctx, "update stream "+name, err) // BEGIN or COMMIT met the end of ctx
	}
	if err != nil {
		return store.Stream{}, err
	}
	s.retentionChanged(name, out.RetentionHours)
	out.Tags = cloneTags(out.Tags)
	return out, nil
}

func cloneTags(t map[string]string) map[string]string {
	if t == nil {
		return nil
	}
	c := make(map[string]string, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}

// DeleteStream implements store.Store: one statement, a conditional DELETE that keeps the stream's
// number_hwm under its name (kvs_retired_names) and its id in kvs_dropped_streams. Its fragment
// rows, which nothing reads any more (reads go through the stream's row, and a stream created
// again under the name has another id), are deleted in steps by the next cleanup passes
// (purgeDropped), then its objects once no fragment refers to them: in this statement, a stream
// of millions of rows did not go within UnavailableWait, on any try. Appends in flight on it
// find no stream at commit: ErrStreamNotFound.
func (s *Store) DeleteStream(ctx context.Context, name, version string) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// The stream's number_hwm is kept under its name in the same statement, for a stream created
	// again under it (CreateStream); the INSERT's row count is the DELETE's.
	tag, err := s.pool.Exec(ctx, `WITH d AS (DELETE FROM kvs_streams WHERE name = $1 AND ($2 = '' OR version = $2) RETURNING id, name, number_hwm),
		dropped AS (INSERT INTO kvs_dropped_streams (id) SELECT id FROM d)
		INSERT INTO kvs_retired_names (name, number_hwm) SELECT name, number_hwm FROM d
		ON CONFLICT (name) DO UPDATE SET number_hwm = GREATEST(kvs_retired_names.number_hwm, EXCLUDED.number_hwm)`, name, version)
	if err != nil {
		return dbErr(ctx, "delete stream "+name, err)
	}
	if tag.RowsAffected() == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT true FROM kvs_streams WHERE name = $1`, name).Scan(&exists); err == pgx.ErrNoRows {
			return fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
		} else if err != nil {
			return dbErr(ctx, "delete stream "+name, err)
		}
		return fmt.Errorf("%w: %s", store.ErrVersionMismatch, name)
	}
	s.mu.Lock()
	delete(s.leases, name)
	s.mu.Unlock()
	return nil
}
