package cluster

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/server/store"
)

// AppendAsync implements store.Store. The fragment joins the node's open batch (a copy of data);
// the batch is written as one object when FlushInterval has passed since it opened or it holds
// FlushBytes, then one PostgreSQL transaction inserts its fragments' index rows, each only if
// its stream's lease is still at the epoch this node took it at (a node that lost the lease
// writes nothing: fencing). wait returns once that transaction committed: nil for a fragment
// now durable and listed; store.ErrNotOwner when another node took the stream meanwhile,
// store.ErrStreamNotFound when it was deleted, store.ErrUnavailable when the object store or
// PostgreSQL did not answer within UnavailableWait.
func (s *Store) AppendAsync(ctx context.Context, name string, meta store.FragmentMeta, data []byte) (func(context.Context) error, error) {
	if len(data) > store.MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes", store.ErrRecordTooLarge, len(data))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := s.writer(ctx, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	switch {
	case l.lost:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", store.ErrNotOwner, name)
	case !l.retained:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", store.ErrNoRetention, name)
	case meta.Number <= l.last || meta.Number >= l.next:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d on %s", store.ErrNumberOrder, meta.Number, name)
	}
	l.last = meta.Number
	l.pending++
	s.mu.Unlock()
	b, i, err := s.batches.add(l, meta, data)
	if err != nil {
		s.mu.Lock()
		l.pending--
		s.mu.Unlock()
		return nil, err
	}
	return func(ctx context.Context) error {
		select {
		case <-b.done:
			return b.results[i]
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

// batcher gathers the appends of all the node's streams into batches, uploads each batch as one
// object (several uploads at once) and commits them in the order they were sealed, so that a
// stream's fragments become visible in number order.
type batcher struct {
	s      *Store
	mu     sync.Mutex
	cur    *batch
	seq    uint64
	closed bool
	queue  chan *batch   // sealed batches, in order, to the committer
	puts   chan struct{} // uploads in flight (semaphore)
	done   chan struct{} // the committer has returned
}

// maxUploads is how many batches a node uploads at once; maxSealed how many sealed batches may
// wait for their commit before appends block (memory: maxSealed × FlushBytes at most).
const (
	maxUploads = 4
	maxSealed  = 16
)

type batch struct {
	seq     uint64
	key     string
	sealed  time.Time
	buf     []byte
	frags   []pendingFrag
	timer   *time.Timer
	putDone chan struct{}
	putErr  error
	done    chan struct{} // closed when results are final
	results []error       // per fragment, like frags
}

type pendingFrag struct {
	l    *lease
	meta store.FragmentMeta
	off  int64
	size int64
	crc  uint32
}

func (bt *batcher) init(s *Store) {
	bt.s = s
	bt.queue = make(chan *batch, maxSealed)
	bt.puts = make(chan struct{}, maxUploads)
	bt.done = make(chan struct{})
}

// add copies data into the open batch and returns the batch and the fragment's index in it.
func (bt *batcher) add(l *lease, meta store.FragmentMeta, data []byte) (*batch, int, error) {
	cfg := &bt.s.cfg
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.closed {
		return nil, 0, store.ErrClosed
	}
	b := bt.cur
	if b == nil {
		bt.seq++
		b = &batch{seq: bt.seq, putDone: make(chan struct{}), done: make(chan struct{}),
			buf: make([]byte, 0, min(int(cfg.FlushBytes), max(len(data)*2, 1<<20)))}
		bt.cur = b
		if cfg.FlushInterval > 0 {
			b.timer = time.AfterFunc(cfg.FlushInterval, func() { bt.sealIf(b) })
		}
	}
	off := len(b.buf)
	b.buf = append(b.buf, data...)
	meta.Size = int64(len(data))
	b.frags = append(b.frags, pendingFrag{l: l, meta: meta, off: int64(off), size: int64(len(data)),
		crc: store.Checksum(meta, data)})
	i := len(b.frags) - 1
	if cfg.FlushInterval == 0 || int64(len(b.buf)) >= cfg.FlushBytes {
		bt.sealLocked()
	}
	return b, i, nil
}

func (bt *batcher) sealIf(b *batch) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.cur == b {
		bt.sealLocked()
	}
}

// sealLocked closes the open batch, queues it for its commit and starts its upload. When
// maxSealed batches wait already, it blocks (and appends with it): the backends are slower than
// the producers, and memory stays bounded.
func (bt *batcher) sealLocked() {
	b := bt.cur
	bt.cur = nil
	if b.timer != nil {
		b.timer.Stop()
	}
	b.sealed = time.Now()
	b.key = bt.s.objectKey(b.sealed, b.seq)
	bt.queue <- b
	bt.puts <- struct{}{}
	go func() {
		defer func() { <-bt.puts }()
		bt.upload(b)
	}()
}

// objectKey names a batch's object: by hour, so that the orphan sweep lists only recent
// prefixes, then by node and sequence.
func (s *Store) objectKey(t time.Time, seq uint64) string {
	return s.cfg.Objects.Prefix + "data/" + t.UTC().Format("2006010215") + "/" + s.nodeID + "-" + strconv.FormatUint(seq, 10)
}

// deadline is when a sealed batch gives up on the backends.
func (bt *batcher) deadline(b *batch) time.Time { return b.sealed.Add(bt.s.cfg.UnavailableWait) }

// upload PUTs the batch's object, retrying until its deadline.
func (bt *batcher) upload(b *batch) {
	defer close(b.putDone)
	s := bt.s
	start := time.Now()
	b.putErr = retry(bt.deadline(b), func(ctx context.Context) error {
		_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(s.cfg.Objects.Bucket), Key: aws.String(b.key),
			Body: bytes.NewReader(b.buf), ContentLength: aws.Int64(int64(len(b.buf))),
		}, unsignedPayload)
		return err
	}, func(err error) { s.log.Warn("cluster: object PUT failed; retrying", "object", b.key, "err", err) })
	if b.putErr != nil {
		b.putErr = unavailable("object store: PUT "+b.key, b.putErr)
		return
	}
	s.metrics.batchPut.Observe(time.Since(start).Seconds())
	s.metrics.objectsWritten.Inc()
	s.metrics.objectBytes.Add(float64(len(b.buf)))
}

// unsignedPayload signs a PUT with UNSIGNED-PAYLOAD, as the SDK does over HTTPS, also over plain
// HTTP (a local MinIO or gateway): hashing each multi-megabyte batch for the signature cost as
// much CPU as the rest of the upload, and each fragment's CRC-32C in the index is checked on every
// read anyway.
func unsignedPayload(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// retry calls fn until it succeeds or the deadline passes, waiting 50 ms, doubling to 1 s,
// between attempts; onErr is told of each failure but the last. Each attempt may take until the
// deadline.
func retry(deadline time.Time, fn func(context.Context) error, onErr func(error)) error {
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := fn(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Until(deadline) < wait {
			return err
		}
		onErr(err)
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// run is the committer: it commits the sealed batches in order, each once its upload is done.
func (bt *batcher) run(context.Context) {
	defer close(bt.done)
	for b := range bt.queue {
		<-b.putDone
		put := time.Since(b.sealed)
		err := b.putErr
		var committed map[fragKey]bool
		if err == nil {
			start := time.Now()
			err = retry(bt.deadline(b), func(ctx context.Context) (err error) {
				committed, err = bt.s.commit(ctx, b)
				return err
			}, func(err error) { bt.s.log.Warn("cluster: index commit failed; retrying", "object", b.key, "err", err) })
			if err != nil {
				err = dbErr(context.Background(), "commit "+b.key, err)
			} else {
				bt.s.metrics.batchCommit.Observe(time.Since(start).Seconds())
			}
		}
		bt.s.log.Debug("cluster: batch", "object", b.key, "bytes", len(b.buf), "fragments", len(b.frags),
			"put_ms", put.Milliseconds(), "commit_ms", (time.Since(b.sealed) - put).Milliseconds(), "err", err)
		bt.s.finish(b, committed, err)
	}
}

// close seals the open batch and waits until every sealed batch is committed or failed.
func (bt *batcher) close() {
	bt.mu.Lock()
	if bt.closed {
		bt.mu.Unlock()
		return
	}
	bt.closed = true
	if bt.cur != nil {
		bt.sealLocked()
	}
	close(bt.queue)
	bt.mu.Unlock()
	<-bt.done
}

type fragKey struct {
	stream int64
	number uint64
}

// commit inserts the index rows of b's fragments, each only under its lease's epoch, and
// returns which are in the index now. The epoch check locks the stream rows it reads (FOR SHARE):
// a take of the lease by another node (an UPDATE of the row) waits for this transaction, or this
// one sees the new epoch and inserts nothing. Without the lock, under READ COMMITTED, a commit
// that had checked the epoch and then stalled before COMMIT went through after another node had
// taken the stream and committed higher numbers (a node frozen there holds the lock until
// PostgreSQL ends its session: idle_in_transaction_session_timeout, set on the pool). Run again after a failure whose outcome is unknown, it
// finds the rows the first run committed (they name the same object).
func (s *Store) commit(ctx context.Context, b *batch) (map[fragKey]bool, error) {
	n := len(b.frags)
	var (
		sid, epoch, num, sns, pns, dns, size, off, crc = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, f := range b.frags {
		sid[i], epoch[i], num[i] = f.l.id, f.l.epoch, int64(f.meta.Number)
		sns[i], pns[i], dns[i] = store.UnixNanos(f.meta.ServerTime), store.UnixNanos(f.meta.ProducerTime), int64(f.meta.Duration)
		size[i], off[i], crc[i] = f.size, f.off, int64(f.crc)
	}
	committed := make(map[fragKey]bool, n)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var objectID int64
		if err := tx.QueryRow(ctx, `INSERT INTO kvs_objects (key, size) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET size = EXCLUDED.size RETURNING id`, b.key, len(b.buf)).Scan(&objectID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kvs_fragments (stream_id, number, server_ns, producer_ns, duration_ns, size, object_id, object_offset, crc)
			SELECT v.sid, v.num, v.sns, v.pns, v.dns, v.size, $1, v.off, v.crc
			FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
				AS v(sid, epoch, num, sns, pns, dns, size, off, crc)
			JOIN kvs_streams s ON s.id = v.sid AND s.epoch = v.epoch AND s.owner = $11
			FOR SHARE OF s
			ON CONFLICT DO NOTHING`,
			objectID, sid, epoch, num, sns, pns, dns, size, off, crc, s.nodeID); err != nil {
			return err
		}
		if s.testCommitHook != nil {
			s.testCommitHook()
		}
		rows, err := tx.Query(ctx, `SELECT stream_id, number FROM kvs_fragments WHERE object_id = $1`, objectID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k fragKey
			var number int64
			if err := rows.Scan(&k.stream, &number); err != nil {
				rows.Close()
				return err
			}
			k.number = uint64(number)
			committed[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, payload := range notices(b, committed) {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.notify, payload); err != nil {
				return err
			}
		}
		return nil
	})
	return committed, err
}

// notices are the NOTIFY payloads of a commit: "name=number" of each stream's newest committed
// fragment, space-separated, each payload under PostgreSQL's 8000-byte limit. Stream names have
// neither spaces nor "=" (kvs-api.md §2).
func notices(b *batch, committed map[fragKey]bool) []string {
	newest := map[string]uint64{}
	for _, f := range b.frags {
		if committed[fragKey{f.l.id, f.meta.Number}] {
			newest[f.l.name] = max(newest[f.l.name], f.meta.Number)
		}
	}
	var out []string
	var sb strings.Builder
	for name, n := range newest {
		item := name + "=" + strconv.FormatUint(n, 10)
		if sb.Len()+len(item)+1 > 7900 {
			out = append(out, sb.String())
			sb.Reset()
		}
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(item)
	}
	if sb.Len() > 0 {
		out = append(out, sb.String())
	}
	return out
}

// finish sets each fragment's result: nil when committed; for the others the batch's error or,
// when the commit went through without them, why (the stream was deleted, or its lease moved).
func (s *Store) finish(b *batch, committed map[fragKey]bool, err error) {
	b.results = make([]error, len(b.frags))
	var missing []int64
	for i, f := range b.frags {
		switch {
		case err != nil:
			b.results[i] = err
		case !committed[fragKey{f.l.id, f.meta.Number}]:
			missing = append(missing, f.l.id)
		}
	}
	gone := map[int64]bool{}
	if len(missing) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		exists := map[int64]bool{}
		rows, qerr := s.pool.Query(ctx, `SELECT id FROM kvs_streams WHERE id = ANY($1)`, missing)
		if qerr == nil {
			for rows.Next() {
				var id int64
				if rows.Scan(&id) == nil {
					exists[id] = true
				}
			}
			rows.Close()
		}
		cancel()
		for _, id := range missing {
			gone[id] = qerr == nil && !exists[id]
		}
	}
	for i, f := range b.frags {
		if err != nil || committed[fragKey{f.l.id, f.meta.Number}] {
			continue
		}
		if gone[f.l.id] {
			b.results[i] = fmt.Errorf("%w: %s", store.ErrStreamNotFound, f.l.name)
			continue
		}
		s.lose(f.l, "committing")
		b.results[i] = fmt.Errorf("%w: %s: fragment %d not committed under epoch %d", store.ErrNotOwner, f.l.name, f.meta.Number, f.l.epoch)
	}
	s.mu.Lock()
	for _, f := range b.frags {
		f.l.pending--
		f.l.idleAt = time.Now()
	}
	s.mu.Unlock()
	b.buf = nil
	close(b.done)
}
