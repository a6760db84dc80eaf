package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openkvs/kvs/internal/every"
	"github.com/openkvs/kvs/server/store"
)

// Feeders: on a cluster, the live cache of a node that does not write a stream is fed by that
// node's feeder for the stream, one per (node, stream) whatever the number of local readers, so
// that GetMedia and every other live reader work on any node the same way as on the writer
// (getmedia.go reads the cache and the store and does not know where the cache's fragments came
// from). The feeder takes fragments in number order, without a gap:
//   - from the writing node's internal tail (tail.go), live, before they are committed;
//   - from the store when no node writes the stream (its writer died and the lease has not
//     moved yet) or the writer cannot be reached: the committed fragments after the last one it
//     has, woken by the cluster's commit notices;
//   - not at all while this node writes the stream itself: its PutMedia sessions publish.
//
// A fragment that came from a tail before it was committed stays in the cache until a commit
// notice (or a look at the store) says it is, as on the writer: a reader that falls behind the
// cache and reads the store never meets a hole that is not one.

// feederLinger keeps a feeder running that long after its last reader left, so that a reader
// that comes back (a player reloading, the console) finds the cache warm.
const feederLinger = 30 * time.Second

// feederPoll is how often a node asks who writes the streams its feeders follow (one query for
// all of them), and feederSync how long a fragment may wait for its commit notice before the
// feeder looks at the store instead (the notice may have been lost).
const (
	feederPoll = time.Second
	feederSync = 3 * time.Second
)

// A tail can go silent without ending: a partition, a stateful firewall that dropped the flow or
// a frozen proxy between the nodes resets nothing, and the feeder's read waited until TCP gave up
// (many minutes) while the writer went on committing, its readers here getting nothing. The tail
// sends each fragment as soon as the writer has it, before its commit (a flush interval, 250 ms
// by default, and a PUT later), so the commit notices do not get ahead of a tail that works: a
// tail that has sent not a byte for feederStall while the notices tell of fragments past the
// last one it sent is given up (the owner poll looks, every feederPoll), and the feeder reads the
// store, trying the tail again feederTailRetry later. 3 s is well over the time a loaded machine
// holds a working tail back (a false end costs a reconnect, not data: the store has what the
// tail did not send), and bounds what the readers here wait for, 3 to 4 s once per try; a quiet
// stream (no commit) keeps its tail however long nothing comes. The feeder stays on the store
// for feederTailRetry, a flush interval behind the writer, rather than make its readers wait
// those seconds again every few seconds for as long as the partition lasts.
const (
	feederStall     = 3 * time.Second
	feederTailRetry = 30 * time.Second
)

type feeders struct {
	m      *media
	client *http.Client

	mu       sync.Mutex
	byStream map[string]*feeder
	stop     func() // ends the Watch and the owner poll
	polled   chan struct{}
	linger   time.Duration // feederLinger; tests shorten it (under mu)
	retry    time.Duration // feederTailRetry; tests shorten it (under mu)
	testRun  func()        // when a test sets it (under mu): runs first in each new feeder's goroutine
}

type feeder struct {
	fs     *feeders
	name   string
	arn    string // the stream's: one created again under name (on any node) has another
	buf    *streamBuffer
	refs   int
	linger *time.Timer
	wake   chan struct{} // 1-slot
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	committed uint64             // the newest committed number the notices told of
	owner     string             // the writer's URL as last polled ("" none)
	polled    bool               // owner is known
	tailing   string             // the node whose tail is read now
	stopTail  context.CancelFunc // ends the tail in progress
	tailLast  uint64             // the newest number the tail in progress sent (or was asked after)
	behind    time.Time          // since when the notices tell of commits past tailLast (zero: they do not)
	stalled   bool               // the tail in progress was given up for its silence
	heard     atomic.Int64       // when the tail in progress last sent a byte (Unix ns)
}

func newFeeders(m *media, c Cluster) *feeders {
	fs := &feeders{m: m, byStream: map[string]*feeder{}, polled: make(chan struct{}), linger: feederLinger, retry: feederTailRetry,
		client: &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}}
	stopWatch := c.Watch(fs.committed)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(fs.polled)
		fs.poll(ctx, c)
	}()
	fs.stop = func() {
		stopWatch()
		cancel()
		<-fs.polled
	}
	return fs
}

// poll asks, every feederPoll, who writes the streams the feeders follow, in one query, and
// tells each feeder whose writer changed: a tail from a node that no longer writes the stream
// ends, and the feeder looks again. It also has feeders whose fragments wait too long for their
// commit notice look at the store, and gives up tails gone silent (checkTail).
func (fs *feeders) poll(ctx context.Context, c Cluster) {
	every.Tick(ctx, feederPoll, func(ctx context.Context) { fs.pollOnce(ctx, c) })
}

func (fs *feeders) pollOnce(ctx context.Context, c Cluster) {
	fs.mu.Lock()
	names := make([]string, 0, len(fs.byStream))
	list := make([]*feeder, 0, len(fs.byStream))
	for name, f := range fs.byStream {
		names, list = append(names, name), append(list, f)
	}
	fs.mu.Unlock()
	if len(names) == 0 {
		return
	}
	for _, f := range list {
		f.checkTail()
	}
	owners, err := c.Owners(ctx, names)
	if err != nil {
		return // the feeders go on with what they know
	}
	for _, f := range list {
		f.setOwner(owners[f.name])
		if at := f.buf.oldestUnsynced(); !at.IsZero() && time.Since(at) > feederSync {
			f.syncWithStore(ctx)
		}
	}
}

// setOwner records the stream's writer; when it changed, a tail from another node ends and the
// feeder looks again.
func (f *feeder) setOwner(url string) {
	f.mu.Lock()
	changed := !f.polled || f.owner != url
	f.owner, f.polled = url, true
	if changed && f.stopTail != nil && f.tailing != url {
		f.stopTail()
	}
	f.mu.Unlock()
	if changed {
		f.poke()
	}
}

// checkTail gives up the tail in progress when it has gone silent while commits went on (see
// feederStall).
func (f *feeder) checkTail() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopTail == nil || f.behind.IsZero() || f.stalled {
		return
	}
	now := time.Now()
	if now.Sub(f.behind) > feederStall && now.Sub(time.Unix(0, f.heard.Load())) > feederStall {
		f.stalled = true
		f.stopTail()
	}
}

// writer returns who writes the stream as last polled, asking now when it was never polled.
func (f *feeder) writer(ctx context.Context) (url string, self bool, err error) {
	f.mu.Lock()
	url, polled := f.owner, f.polled
	f.mu.Unlock()
	if !polled {
		url, _, err = f.fs.m.s.cfg.Cluster.Owner(ctx, f.name)
		if err != nil {
			return "", false, err
		}
		f.setOwner(url)
	}
	return url, url != "" && url == f.fs.m.s.cfg.AdvertiseURL, nil
}

// committed is the cluster's commit notice: stream's fragments up to last are durable.
func (fs *feeders) committed(stream string, last uint64) {
	fs.mu.Lock()
	var list []*feeder
	if stream == "" { // notices may have been lost: every feeder looks at the store
		for _, f := range fs.byStream {
			list = append(list, f)
		}
	} else if f := fs.byStream[stream]; f != nil {
		list = append(list, f)
	}
	fs.mu.Unlock()
	for _, f := range list {
		if last > 0 {
			f.mu.Lock()
			f.committed = max(f.committed, last)
			if f.stopTail != nil && f.committed > f.tailLast && f.behind.IsZero() {
				f.behind = time.Now()
			}
			f.mu.Unlock()
			f.buf.markDurable(last)
		}
		f.poke()
	}
	// Readers that wait for the store rather than for a feeder (a DASH request at the live edge,
	// hlsmedia.go's fragmentAt) learn here of the commits of the node that writes the stream,
	// where no feeder of the stream runs on this node. Where one runs, it wakes the stream's
	// readers once it has cached what is new: woken now as well, its GetMedia readers would look
	// before it did and read the fragment from the object store themselves.
	// A buffer no feeder runs for any more (its last reader left) may still hold fragments its
	// tail gave it before their commit: they are durable now, and go like any other (else they
	// were pinned in memory for good, nothing else telling this buffer of the commit).
	if stream != "" && len(list) == 0 {
		if b := fs.m.cache.lookup(stream); b != nil && last > 0 {
			b.markDurable(last)
		}
		fs.m.notify.notify(stream)
	}
}

// join makes sure the stream's cache is fed for a reader on this node, until the returned
// function is called. The reader chooses where it starts after join returns (getMedia), so a new
// feeder's starting point is found here, first: the fragments committed between the two are then
// fed to the cache. (Found later, in the feeder's goroutine, it could lie past fragments the
// reader waits for — on a loaded machine the goroutine started after an upload to the writer
// had been committed — and the reader, at the live edge of a cache those never reached, waited
// for good.) The store is asked only when no feeder runs, outside the lock: when one was started
// meanwhile, the answer goes unused.
func (fs *feeders) join(ctx context.Context, st store.Stream) func() {
	buf := fs.m.buffer(st)
	var start uint64
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.byStream[st.Name]; f != nil && f.arn != st.ARN {
		// The stream was deleted and created again: the old one's feeder goes.
		delete(fs.byStream, st.Name)
		f.cancel()
	}
	if fs.byStream[st.Name] == nil {
		fs.mu.Unlock()
		start = feedStart(ctx, fs.m.s.store, st.Name, buf)
		fs.mu.Lock()
	}
	f := fs.byStream[st.Name]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &feeder{fs: fs, name: st.Name, arn: st.ARN, buf: buf, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
		fs.byStream[st.Name] = f
		hook := fs.testRun
		go func() {
			defer close(f.done)
			if hook != nil {
				hook()
			}
			f.run(ctx, start)
		}()
	}
	if f.linger != nil {
		f.linger.Stop()
		f.linger = nil
	}
	f.refs++
	var once sync.Once
	return func() { once.Do(func() { fs.leave(f) }) }
}

// gone ends feeder f, whose stream was deleted (on any node): its buffer closes, and its readers
// here are woken to find it so (STREAM_DELETED).
func (fs *feeders) gone(f *feeder) {
	fs.mu.Lock()
	if fs.byStream[f.name] == f {
		delete(fs.byStream, f.name)
	}
	fs.mu.Unlock()
	fs.m.cache.dropIf(f.name, f.buf)
	fs.m.notify.notify(f.name)
}

func (fs *feeders) leave(f *feeder) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f.refs--
	if f.refs > 0 || fs.byStream[f.name] != f {
		return
	}
	f.linger = time.AfterFunc(fs.linger, func() {
		fs.mu.Lock()
		if f.refs > 0 || fs.byStream[f.name] != f {
			fs.mu.Unlock()
			return
		}
		delete(fs.byStream, f.name)
		fs.mu.Unlock()
		f.cancel()
	})
}

// writing tells the stream's feeder, if any, that this node writes the stream from now on: a
// tail in progress from the previous writer ends.
func (fs *feeders) writing(stream string) {
	fs.mu.Lock()
	f := fs.byStream[stream]
	fs.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	if f.stopTail != nil {
		f.stopTail()
	}
	f.mu.Unlock()
	f.poke()
}

// close stops every feeder and waits for them.
func (fs *feeders) close() {
	fs.stop()
	fs.mu.Lock()
	all := make([]*feeder, 0, len(fs.byStream))
	for name, f := range fs.byStream {
		all = append(all, f)
		delete(fs.byStream, name)
	}
	fs.mu.Unlock()
	for _, f := range all {
		f.cancel()
		<-f.done
	}
}

func (f *feeder) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *feeder) wait(ctx context.Context) {
	t := time.NewTimer(feederPoll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-f.wake:
	case <-t.C:
	}
}

// feedStart is the newest fragment the cache has, or the store has committed: where feeding
// starts, after it.
func feedStart(ctx context.Context, st store.Store, name string, buf *streamBuffer) uint64 {
	last := buf.lastNumber()
	if meta, err := st.Last(ctx, name); err == nil {
		last = max(last, meta.Number)
	}
	return last
}

// run feeds the cache with the fragments after last until ctx ends or the stream is deleted.
func (f *feeder) run(ctx context.Context, last uint64) {
	m := f.fs.m
	log := m.s.log.With("stream", f.name, "feeder", m.s.cfg.AdvertiseURL)
	checked := time.Now()
	// After a tail given up for its silence: the store only until storeUntil, unless another
	// node writes the stream by then.
	var silent string
	var storeUntil time.Time
	for ctx.Err() == nil {
		url, self, err := f.writer(ctx)
		switch {
		case errors.Is(err, store.ErrStreamNotFound):
			f.fs.gone(f)
			return
		case err != nil:
			log.Debug("feeder: owner", "err", err)
		case self:
			// This node writes the stream: its uploads publish. Look again later.
			f.wait(ctx)
			last = f.buf.lastNumber()
			continue
		case url == silent && time.Now().Before(storeUntil):
			// The store below.
		case url != "":
			stalled, err := f.tail(ctx, url, &last)
			if stalled {
				f.fs.mu.Lock()
				silent, storeUntil = url, time.Now().Add(f.fs.retry)
				f.fs.mu.Unlock()
				log.Info("feeder: tail silent while the writer commits: reading the store", "writer", url,
					"after", last, "retry_in", time.Until(storeUntil).Round(time.Second))
			} else if err != nil && ctx.Err() == nil {
				log.Debug("feeder: tail ended", "writer", url, "err", err)
			}
		}
		// Nobody writes the stream, or its writer cannot be reached: what is committed.
		err = f.fromStore(ctx, &last)
		if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrStreamNotFound) {
			log.Debug("feeder: store", "err", err)
		}
		// A delete on another node reaches this one only through the store: a stream that is
		// gone, or is another stream of the same name now (its numbers start again below last).
		check := time.Since(checked) >= feederSync
		if check {
			checked = time.Now()
		}
		if errors.Is(err, store.ErrStreamNotFound) || check && f.replaced(ctx) {
			f.fs.gone(f)
			return
		}
		f.wait(ctx)
	}
}

// replaced reports whether the feeder's stream is gone from the store, or another stream has its
// name now.
func (f *feeder) replaced(ctx context.Context) bool {
	st, err := f.fs.m.s.store.GetStream(ctx, f.name)
	return errors.Is(err, store.ErrStreamNotFound) || err == nil && st.ARN != f.arn
}

// tail publishes the fragments after *last that url's internal tail sends, until it ends, its
// writer changes, it goes silent while the writer commits (stalled) or ctx ends.
func (f *feeder) tail(ctx context.Context, url string, last *uint64) (stalled bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	f.stopTail, f.tailing, f.tailLast, f.stalled = cancel, url, *last, false
	f.behind = time.Time{}
	if f.committed > *last {
		f.behind = time.Now()
	}
	f.heard.Store(time.Now().UnixNano())
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		stalled = f.stalled
		f.stopTail, f.tailing, f.behind, f.stalled = nil, "", time.Time{}, false
		f.mu.Unlock()
	}()
	return false, f.readTail(ctx, url, last)
}

// progress records that the tail in progress sent fragment n.
func (f *feeder) progress(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tailLast = n
	f.behind = time.Time{}
	if f.committed > n {
		f.behind = time.Now()
	}
}

// heardReader records when its reader last gave a byte.
type heardReader struct {
	r  io.Reader
	at *atomic.Int64
}

func (h heardReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		h.at.Store(time.Now().UnixNano())
	}
	return n, err
}

// readTail reads url's internal tail for tail.
func (f *feeder) readTail(ctx context.Context, url string, last *uint64) error {
	m := f.fs.m
	body, _ := json.Marshal(tailRequest{StreamName: f.name, After: *last})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+tailPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(hdrRelayedBy, m.s.cfg.AdvertiseURL)
	if err := m.s.signRelay(ctx, req, body); err != nil {
		return err
	}
	m.s.metrics.tailsOpened.Inc()
	resp, err := f.fs.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("tail: %s: %s", resp.Status, msg)
	}
	// While the tail runs, the owner poll ends it if url stops writing the stream (setOwner).
	r := bufio.NewReaderSize(heardReader{resp.Body, &f.heard}, 64<<10)
	for {
		fr, err := readFrame(r)
		if err != nil {
			if err == io.EOF { //nolint:errorlint // readFrame returns io.EOF as is at a clean end
				return nil
			}
			return err
		}
		if fr.meta.Number <= *last {
			continue
		}
		f.publish(fr.meta, fr.chunk, fr.durable)
		*last = fr.meta.Number
		f.progress(*last)
	}
}

// fromStore publishes the committed fragments after *last.
func (f *feeder) fromStore(ctx context.Context, last *uint64) error {
	st := f.fs.m.s.store
	for ctx.Err() == nil {
		metas, err := st.Range(ctx, f.name, *last+1, 16)
		if err != nil || len(metas) == 0 {
			return err
		}
		for _, meta := range metas {
			chunk, _, err := readChunk(ctx, st, f.name, meta.Number, nil)
			if errors.Is(err, store.ErrFragmentNotFound) {
				*last = meta.Number // purged meanwhile
				continue
			}
			if err != nil {
				return err
			}
			f.publish(meta, chunk, true)
			*last = meta.Number
		}
	}
	return ctx.Err()
}

func (f *feeder) publish(meta store.FragmentMeta, chunk []byte, durable bool) {
	f.mu.Lock()
	durable = durable || meta.Number <= f.committed
	f.mu.Unlock()
	lf := &liveFragment{Meta: meta, Chunk: chunk, Published: time.Now()}
	lf.refs.Store(0) // only the buffer's, taken by publish
	lf.unsynced.Store(!durable)
	f.fs.m.publish(f.name, f.buf, lf)
}

// syncWithStore marks durable what the store has committed, in case a commit notice was lost.
func (f *feeder) syncWithStore(ctx context.Context) {
	if meta, err := f.fs.m.s.store.Last(ctx, f.name); err == nil {
		f.buf.markDurable(meta.Number)
	}
}
