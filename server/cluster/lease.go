package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/internal/every"
	"github.com/openkvs/kvs/server/store"
)

// lease is this node's right to write one stream: the row's epoch when the lease was taken, and
// the fragment numbers reserved under it. Fields after name are guarded by Store.mu.
type lease struct {
	name     string
	id       int64 // kvs_streams.id: a stream deleted and created again has another
	epoch    int64
	next     uint64 // the next number to hand out
	limit    uint64 // the last number reserved (number_hwm when reserved)
	last     uint64 // the last number appended
	retained bool   // retention_hours > 0
	pending  int    // appends not yet committed or failed
	idleAt   time.Time
	lost     bool // a renewal or a commit found another epoch: every later append is refused
}

// register puts this node in kvs_nodes. An earlier process that advertised the same URL is gone
// (this one listens there now): its row goes and its leases are freed at once, so a restarted
// node's streams are writable again without waiting out their TTL.
func (s *Store) register(ctx context.Context) error {
	return dbErr(ctx, "register node", pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE kvs_streams SET owner = NULL, lease_expires = NULL
			WHERE owner IN (SELECT id FROM kvs_nodes WHERE url = $1)`, s.cfg.NodeURL); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM kvs_nodes WHERE url = $1`, s.cfg.NodeURL); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO kvs_nodes (id, url) VALUES ($1, $2)`, s.nodeID, s.cfg.NodeURL)
		return err
	}))
}

// take makes this node the writer of stream: it takes the lease when it is free, expired or
// already this node's (keeping its epoch then), and reserves a first block of numbers above
// every number reserved before. It returns the owner's URL and nil lease when another node
// holds a live lease.
func (s *Store) take(ctx context.Context, name string) (*lease, string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	s.mu.Lock()
	for {
		if l := s.leases[name]; l != nil && !l.lost {
			s.mu.Unlock()
			return l, "", nil
		}
		freed := s.freeing[name]
		if freed == nil {
			break
		}
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, "", dbErr(ctx, "take lease of "+name+": waiting for its release", ctx.Err())
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	var (
		l   = &lease{name: name}
		hwm int64
		ret int
	)
	err := s.pool.QueryRow(ctx, `UPDATE kvs_streams SET
			epoch = CASE WHEN owner = $2 THEN epoch ELSE epoch + 1 END,
			owner = $2, lease_expires = now() + $3 * interval '1 millisecond',
			number_hwm = number_hwm + $4
		WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_expires < now())
		RETURNING id, epoch, number_hwm, retention_hours`,
		name, s.nodeID, s.cfg.LeaseTTL.Milliseconds(), numberBlock).Scan(&l.id, &l.epoch, &hwm, &ret)
	if err == pgx.ErrNoRows {
		url, err := s.holder(ctx, name)
		if err != nil {
			return nil, "", err
		}
		if url == "" { // freed between the two statements: try once more
			return s.take(ctx, name)
		}
		return nil, url, nil
	}
	if err != nil {
		return nil, "", dbErr(ctx, "take lease of "+name, err)
	}
	l.limit, l.next, l.retained, l.idleAt = uint64(hwm), uint64(hwm)-numberBlock+1, ret > 0, time.Now()
	// Numbers below the new block were handed out under an earlier lease, maybe this node's,
	// lost since: another writer may have committed higher ones meanwhile, so an append of one
	// of them now would put it after them (ErrNumberOrder; its producer sends it again).
	l.last = l.next - 1
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.leases[name]; cur != nil && !cur.lost {
		// Another goroutine of this node took it meanwhile: keep the first (same epoch); the
		// numbers reserved here stay unused, a gap.
		return cur, "", nil
	}
	if s.closed {
		return nil, "", store.ErrClosed
	}
	s.leases[name] = l
	s.metrics.leasesTaken.Inc()
	s.log.Info("cluster: lease taken", "stream", name, "epoch", l.epoch, "numbers_from", l.next)
	return l, "", nil
}

// writer returns this node's lease of stream for an append or a number, taking it if needed;
// store.ErrNotOwner when another node holds it.
func (s *Store) writer(ctx context.Context, name string) (*lease, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	l, owner, err := s.take(ctx, name)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, fmt.Errorf("%w: stream %s is written by %s", store.ErrNotOwner, name, owner)
	}
	return l, nil
}

// owner returns the URL of the node whose lease on stream is live ("" when none is) and whether
// that node is this one. A node whose heartbeat is older than two renewal periods is taken for
// dead before its lease runs out: nobody is named then, so that clients come to a live node,
// which waits out the lease and takes the stream (the lease itself still decides who writes).
func (s *Store) owner(ctx context.Context, name string) (string, bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var owner, url *string
	err := s.pool.QueryRow(ctx, `SELECT s.owner, n.url FROM kvs_streams s
		LEFT JOIN kvs_nodes n ON n.id = s.owner AND n.heartbeat_at > now() - $2 * interval '1 millisecond'
		WHERE s.name = $1 AND (s.owner IS NULL OR s.lease_expires > now())`, name, (2*s.cfg.LeaseTTL/3).Milliseconds()).Scan(&owner, &url)
	switch {
	case err == pgx.ErrNoRows:
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT true FROM kvs_streams WHERE name = $1`, name).Scan(&exists); err == pgx.ErrNoRows {
			return "", false, fmt.Errorf("%w: %s", store.ErrStreamNotFound, name)
		} else if err != nil {
			return "", false, dbErr(ctx, "owner of "+name, err)
		}
		return "", false, nil // a lease that expired: nobody writes it
	case err != nil:
		return "", false, dbErr(ctx, "owner of "+name, err)
	case owner == nil:
		return "", false, nil
	case *owner == s.nodeID:
		return s.cfg.NodeURL, true, nil
	case url == nil:
		return "", false, nil // its node left the list or stopped beating: it is gone
	}
	return *url, false, nil
}

// holder returns the URL of the node holding stream's live lease, dead or alive ("" when the
// lease is free or ran out), for take: a caller that waits for a dead writer's lease to run out
// must be told whose it is.
func (s *Store) holder(ctx context.Context, name string) (string, error) {
	var url *string
	err := s.pool.QueryRow(ctx, `SELECT coalesce(n.url, '') FROM kvs_streams s LEFT JOIN kvs_nodes n ON n.id = s.owner
		WHERE s.name = $1 AND s.owner IS NOT NULL AND s.lease_expires > now()`, name).Scan(&url)
	switch {
	case err == pgx.ErrNoRows:
		if _, err := s.streamID(ctx, name); err != nil {
			return "", err
		}
		return "", nil
	case err != nil:
		return "", dbErr(ctx, "lease holder of "+name, err)
	case *url == "":
		return "(a node that left)", nil // its row is gone but its lease has not run out
	}
	return *url, nil
}

// Acquire makes this node the writer of stream for an upload (PutMedia) and returns "", or
// returns the URL of the node that writes it now. Each "" answer is paired with one Release, when
// the upload has ended and its appends are waited for. A lease this node holds on a stream
// deleted and created again under its name on another node (an upload of the old one still
// open here) is dropped first: kept, it would fail every append to the new stream as gone.
func (s *Store) Acquire(ctx context.Context, name string) (string, error) {
	if s.isClosed() {
		return "", store.ErrClosed
	}
	s.mu.Lock()
	held := s.leases[name]
	s.mu.Unlock()
	if held != nil {
		bctx, cancel := s.bound(ctx)
		id, err := s.streamID(bctx, name)
		cancel()
		if err != nil {
			return "", err
		}
		if id != held.id {
			s.lose(held, "the stream was deleted and created again")
		}
	}
	l, owner, err := s.take(ctx, name)
	if err != nil || l == nil {
		return owner, err
	}
	s.mu.Lock()
	s.uploads[name]++
	s.mu.Unlock()
	return "", nil
}

// Release ends an upload Acquire allowed. When the node has no upload and no append in flight
// on the stream left, it gives the lease up, so that a producer that reconnects to another node
// writes there at once instead of being relayed here. Uploads are counted by name, not by
// lease: the lease an upload was acquired under may have been replaced meanwhile.
func (s *Store) Release(name string) {
	s.mu.Lock()
	if s.uploads[name]--; s.uploads[name] <= 0 {
		delete(s.uploads, name)
	}
	l := s.leases[name]
	var freed func()
	if l != nil && s.uploads[name] == 0 && l.pending == 0 && !s.closed {
		freed = s.releasing(l)
	}
	s.mu.Unlock()
	if freed != nil {
		s.giveUp(l)
		freed()
	}
}

// releasing takes l out of the leases held, to be given up (s.mu held); the caller calls
// giveUp(l) and then the returned func. Until then take waits on the same stream: its UPDATE
// would find the row still this node's and keep l's epoch, and l's give-up would then free the
// new lease's row, failing its appends as written by another node (a producer that reconnects
// at once after an ERROR met exactly that).
func (s *Store) releasing(l *lease) func() {
	delete(s.leases, l.name)
	ch := make(chan struct{})
	s.freeing[l.name] = ch
	return func() {
		s.mu.Lock()
		if s.freeing[l.name] == ch {
			delete(s.freeing, l.name)
		}
		s.mu.Unlock()
		close(ch)
	}
}

// giveUp frees l's row unless another epoch took it meanwhile.
func (s *Store) giveUp(l *lease) {
	if hook := s.testHookGiveUp.Load(); hook != nil {
		(*hook)(l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `UPDATE kvs_streams SET owner = NULL, lease_expires = NULL WHERE id = $1 AND owner = $2 AND epoch = $3`,
		l.id, s.nodeID, l.epoch); err != nil {
		s.log.Warn("cluster: giving up a lease", "stream", l.name, "err", err)
		return
	}
	s.log.Debug("cluster: lease given up", "stream", l.name, "epoch", l.epoch)
}

// Owner returns the URL of the node that writes stream ("" when none does) and whether it is
// this node: GetDataEndpoint's answer, and where GetMedia readers are fed from.
func (s *Store) Owner(ctx context.Context, name string) (string, bool, error) {
	if s.isClosed() {
		return "", false, store.ErrClosed
	}
	return s.owner(ctx, name)
}

// Owners is Owner for many streams in one query: the URL of each one's writer ("" for none, and
// for a stream that does not exist). A node's feeders ask it once a second for all the streams
// they follow.
func (s *Store) Owners(ctx context.Context, names []string) (map[string]string, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT s.name, coalesce(n.url, '') FROM kvs_streams s
		JOIN kvs_nodes n ON n.id = s.owner AND n.heartbeat_at > now() - $2 * interval '1 millisecond'
		WHERE s.name = ANY($1) AND s.lease_expires > now()`, names, (2 * s.cfg.LeaseTTL / 3).Milliseconds())
	if err != nil {
		return nil, dbErr(ctx, "owners", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(names))
	for rows.Next() {
		var name, url string
		if err := rows.Scan(&name, &url); err != nil {
			return nil, dbErr(ctx, "owners", err)
		}
		out[name] = url
	}
	return out, dbErr(ctx, "owners", rows.Err())
}

// Prepare implements store.Store: it takes the stream's lease and reserves its first numbers
// while the upload's first fragment arrives. A retention-0 stream is prepared too (its numbers
// come from the same reservation). Another node's live lease: store.ErrNotOwner.
func (s *Store) Prepare(ctx context.Context, name string) error {
	_, err := s.writer(ctx, name)
	return err
}

// NextNumber implements store.Store: numbers come from the blocks reserved under the lease; an
// exhausted block is followed by another (one UPDATE, fenced by the epoch).
func (s *Store) NextNumber(ctx context.Context, name string) (uint64, error) {
	l, err := s.writer(ctx, name)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	if l.next <= l.limit {
		n := l.next
		l.next++
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var hwm int64
	err = s.pool.QueryRow(ctx, `UPDATE kvs_streams SET number_hwm = number_hwm + $4 WHERE id = $1 AND owner = $2 AND epoch = $3 RETURNING number_hwm`,
		l.id, s.nodeID, l.epoch, numberBlock).Scan(&hwm)
	if err == pgx.ErrNoRows {
		s.lose(l, "reserving numbers")
		return s.NextNumber(ctx, name) // takes the lease again if it is free, or says who has it
	}
	if err != nil {
		return 0, dbErr(ctx, "reserve numbers of "+name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(hwm) > l.limit {
		l.next, l.limit = max(l.next, uint64(hwm)-numberBlock+1), uint64(hwm)
	}
	n := l.next
	l.next++
	return n, nil
}

// lose marks l lost (another node took the stream, or it was deleted and created again): every
// later append under it is refused, and the next operation takes the lease anew.
func (s *Store) lose(l *lease, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.lost {
		return
	}
	l.lost = true
	s.metrics.leasesLost.Inc()
	if s.leases[l.name] == l {
		delete(s.leases, l.name)
	}
	s.log.Warn("cluster: lease lost", "stream", l.name, "epoch", l.epoch, "while", why)
}

// retentionChanged updates a held lease after UpdateStream on this node (other nodes' changes
// are seen at the next renewal).
func (s *Store) retentionChanged(name string, hours int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.leases[name]; l != nil {
		l.retained = hours > 0
	}
}

// leaseLoop renews this node's leases and its heartbeat every LeaseTTL/3, in one statement each,
// and gives up leases idle (no upload, no append) for a TTL.
func (s *Store) leaseLoop(ctx context.Context) {
	every.Tick(ctx, s.cfg.LeaseTTL/3, func(ctx context.Context) {
		if err := s.renew(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("cluster: renewing leases", "err", err)
		}
	})
}

func (s *Store) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
	defer cancel()
	now := time.Now()
	s.mu.Lock()
	var ids, epochs []int64
	held := map[int64]*lease{}
	var idle []*lease
	var freed []func()
	for _, l := range s.leases {
		if s.uploads[l.name] == 0 && l.pending == 0 && now.Sub(l.idleAt) > s.cfg.LeaseTTL {
			freed = append(freed, s.releasing(l))
			idle = append(idle, l)
			continue
		}
		if l.pending > 0 || s.uploads[l.name] > 0 {
			l.idleAt = now
		}
		ids, epochs = append(ids, l.id), append(epochs, l.epoch)
		held[l.id] = l
	}
	s.mu.Unlock()
	for i, l := range idle {
		s.giveUp(l)
		freed[i]()
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO kvs_nodes (id, url) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`, s.nodeID, s.cfg.NodeURL); err != nil {
		return dbErr(ctx, "heartbeat", err)
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `UPDATE kvs_streams s SET lease_expires = now() + $2 * interval '1 millisecond'
		FROM unnest($3::bigint[], $4::bigint[]) AS v(id, epoch)
		WHERE s.id = v.id AND s.epoch = v.epoch AND s.owner = $1
		RETURNING s.id, s.retention_hours`, s.nodeID, s.cfg.LeaseTTL.Milliseconds(), ids, epochs)
	if err != nil {
		return dbErr(ctx, "renew leases", err)
	}
	renewed := map[int64]int{}
	for rows.Next() {
		var id int64
		var ret int
		if err := rows.Scan(&id, &ret); err != nil {
			rows.Close()
			return dbErr(ctx, "renew leases", err)
		}
		renewed[id] = ret
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return dbErr(ctx, "renew leases", err)
	}
	for id, l := range held {
		ret, ok := renewed[id]
		if !ok {
			s.lose(l, "renewing")
			continue
		}
		s.mu.Lock()
		l.retained = ret > 0
		s.mu.Unlock()
	}
	return nil
}

// Node is one server of the cluster, as the node list has it.
type Node struct {
	ID        string
	URL       string
	Started   time.Time
	Heartbeat time.Time
	Streams   []string // the streams it writes (live leases)
	Self      bool
}

// Nodes returns the nodes whose heartbeat is recent (three lease TTLs) and the streams each
// writes, for the console and kvs cluster status.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT n.id, n.url, n.started_at, n.heartbeat_at,
			coalesce(array_agg(st.name ORDER BY st.name) FILTER (WHERE st.name IS NOT NULL), '{}')
		FROM kvs_nodes n LEFT JOIN kvs_streams st ON st.owner = n.id AND st.lease_expires > now()
		WHERE n.heartbeat_at > now() - $1 * interval '1 millisecond'
		GROUP BY n.id ORDER BY n.url, n.id`, 3*s.cfg.LeaseTTL.Milliseconds())
	if err != nil {
		return nil, dbErr(ctx, "nodes", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var n Node
		if err := rows.Scan(&n.ID, &n.URL, &n.Started, &n.Heartbeat, &n.Streams); err != nil {
			return nil, dbErr(ctx, "nodes", err)
		}
		n.Self = n.ID == s.nodeID
		out = append(out, n)
	}
	return out, dbErr(ctx, "nodes", rows.Err())
}

var errFenced = errors.New("cluster: fenced")
