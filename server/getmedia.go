package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// hdrNoFollow is a kvs extension: a GetMedia request with "x-kvs-no-follow: 1" ends its response
// at the live edge instead of waiting for new fragments. The real service ignores unknown headers,
// so a client that sends it still works against KVS (where it follows the stream).
const hdrNoFollow = "x-kvs-no-follow"

// Start selector types (kvs-api.md §6).
const (
	selNow               = "NOW"
	selEarliest          = "EARLIEST"
	selFragmentNumber    = "FRAGMENT_NUMBER"
	selServerTimestamp   = "SERVER_TIMESTAMP"
	selProducerTimestamp = "PRODUCER_TIMESTAMP"
	selContinuationToken = "CONTINUATION_TOKEN"
)

var (
	fragmentNumberPattern    = regexp.MustCompile(`^[0-9]+$`)
	continuationTokenPattern = regexp.MustCompile(`^[a-zA-Z0-9_.\-]+$`)
)

type getMediaRequest struct {
	streamRef
	StartSelector *startSelector `json:"StartSelector"`
}

type startSelector struct {
	StartSelectorType   *string    `json:"StartSelectorType"`
	AfterFragmentNumber *string    `json:"AfterFragmentNumber"`
	StartTimestamp      *Timestamp `json:"StartTimestamp"`
	ContinuationToken   *string    `json:"ContinuationToken"`
}

// startSpec is a validated start selector.
type startSpec struct {
	Type   string
	Number uint64    // FRAGMENT_NUMBER, CONTINUATION_TOKEN
	Time   time.Time // SERVER_TIMESTAMP, PRODUCER_TIMESTAMP
}

// parseStartSelector validates a StartSelector without looking at the stream. A missing member
// or one that breaks the model's pattern is InvalidArgumentException; a well-formed
// AfterFragmentNumber that this server never issues is ResourceNotFoundException (no such
// fragment); a ContinuationToken that is not one of ours is InvalidArgumentException.
func parseStartSelector(sel *startSelector) (startSpec, error) {
	if sel == nil || sel.StartSelectorType == nil {
		return startSpec{}, invalidArgf("StartSelector.StartSelectorType is required.")
	}
	spec := startSpec{Type: *sel.StartSelectorType}
	switch spec.Type {
	case selNow, selEarliest:
	case selFragmentNumber:
		v := sel.AfterFragmentNumber
		if v == nil || len(*v) > 128 || !fragmentNumberPattern.MatchString(*v) {
			return startSpec{}, invalidArgf("StartSelector.AfterFragmentNumber must be 1 to 128 digits with FRAGMENT_NUMBER.")
		}
		n, err := parseFragmentNumber(*v)
		if err != nil {
			return startSpec{}, fragmentNotFound(*v)
		}
		spec.Number = n
	case selServerTimestamp, selProducerTimestamp:
		if sel.StartTimestamp == nil {
			return startSpec{}, invalidArgf("StartSelector.StartTimestamp is required with %s.", spec.Type)
		}
		spec.Time = sel.StartTimestamp.Time
	case selContinuationToken:
		v := sel.ContinuationToken
		if v == nil || len(*v) > 128 || !continuationTokenPattern.MatchString(*v) {
			return startSpec{}, invalidArgf("StartSelector.ContinuationToken must be 1 to 128 of [a-zA-Z0-9_.-] with CONTINUATION_TOKEN.")
		}
		n, err := parseFragmentNumber(*v)
		if err != nil || n == math.MaxUint64 { // never issued: nothing could follow it
			return startSpec{}, invalidArgf("StartSelector.ContinuationToken is not a token returned by this server.")
		}
		spec.Number = n
	default:
		return startSpec{}, invalidArgf("StartSelector.StartSelectorType must be one of NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP, CONTINUATION_TOKEN.")
	}
	return spec, nil
}

func fragmentNotFound(number string) error {
	return apiErrorf(codeResourceNotFound, "Fragment %s is not found.", number)
}

// getMedia implements GetMedia (kvs-api.md §6). The request is checked before the 200:
// a bad selector is InvalidArgumentException, an unknown stream or FRAGMENT_NUMBER fragment
// ResourceNotFoundException. The response is video/webm, one chunk per fragment, each written
// with one Write and one Flush: the stored chunk (§6.1) followed by a Tags element with
// MILLIS_BEHIND_NOW (now − server timestamp) and CONTINUATION_TOKEN (the fragment's number).
//
// Start selectors (choices for §6 and §13.1):
//   - NOW: the first fragment completed (published) after the request; older ones are not sent.
//   - EARLIEST: the oldest fragment in the store or, for a retention-0 stream, in the live buffer.
//   - FRAGMENT_NUMBER: inclusive, that fragment first (the 2018 docs' reading). Unknown: 404.
//   - SERVER_TIMESTAMP / PRODUCER_TIMESTAMP: the fragment whose [start, start+duration) contains
//     the time, else the first one that starts after it; fragments then follow in number order.
//     With none after it, the response waits for new fragments, as with NOW.
//   - CONTINUATION_TOKEN: strictly after the fragment the token names (it need not still exist).
//
// Fragments are sent in number order, strictly after the last one sent: from the store while
// they are older than the live buffer's oldest, then from the buffer, so the switch has no gap
// and no duplicate. A fragment that disappears meanwhile (retention) is skipped. At the live
// edge the response waits for the notifier's notice, then pulls the new fragment; it ends when the
// client leaves, on x-kvs-no-follow, after GetMediaIdleTimeout without a new fragment, or on
// Server.Close (also while catching up: after the chunk being sent; a no-follow response, whose
// clean end means the live edge, then ends with an error chunk, ERROR_ID 5000). When the stream is deleted it ends with an error chunk (FRAGMENT_NUMBER of the last
// fragment sent, ERROR_ID 4000, ERROR_CODE STREAM_DELETED); a store failure gives ERROR_ID 5000.
// Each write has a MediaWriteTimeout deadline, so a client that stops reading is dropped.
func (m *media) getMedia(ctx context.Context, req *getMediaRequest) (_ responder, err error) {
	s := m.s
	spec, err := parseStartSelector(req.StartSelector)
	if err != nil {
		return nil, err
	}
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return nil, err
	}
	buf := m.buffer(st)
	notices, unsubscribe := m.notify.subscribe(st.Name) // before choosing the start: no notice can be missed
	unfollow := m.follow(ctx, st)
	defer func() {
		if err != nil {
			unsubscribe()
			unfollow()
		}
	}()
	if _, err := s.store.GetStream(ctx, st.Name); errors.Is(err, store.ErrStreamNotFound) {
		m.forget(st) // deleted since the lookup: do not leave a buffer behind
		return nil, err
	}
	last, err := m.startAfter(ctx, st.Name, buf, spec)
	if err != nil {
		return nil, err
	}
	return func(w http.ResponseWriter, r *http.Request) {
		defer unsubscribe()
		defer unfollow()
		rc := http.NewResponseController(w)
		c := &consumer{m: m, name: st.Name, buf: buf, w: w, rc: rc, pw: newPacedWriter(w, r, rc, m.writeTimeout), last: last, started: time.Now()}
		s.metrics.activeReaders.Inc()
		defer s.metrics.activeReaders.Dec()
		w.Header().Set("Content-Type", "video/webm")
		w.Header().Set("X-Accel-Buffering", "no") // nginx: pass each fragment on as it comes (as PutMedia's ACKs)
		w.WriteHeader(http.StatusOK)
		_ = c.rc.Flush()
		c.run(r.Context(), notices, r.Header.Get(hdrNoFollow) == "1")
	}, nil
}

// startAfter returns the number after which delivery starts (0: from the first).
func (m *media) startAfter(ctx context.Context, name string, buf *streamBuffer, spec startSpec) (uint64, error) {
	st := m.s.store
	switch spec.Type {
	case selEarliest:
		return 0, nil
	case selContinuationToken:
		return spec.Number, nil
	case selNow:
		last := buf.lastNumber()
		meta, err := st.Last(ctx, name)
		switch {
		case err == nil:
			last = max(last, meta.Number)
		case !errors.Is(err, store.ErrFragmentNotFound):
			return 0, fmt.Errorf("get media %s: %w", name, err)
		}
		return last, nil
	case selFragmentNumber:
		if buf.get(spec.Number) != nil {
			return spec.Number - 1, nil
		}
		if _, err := st.Fragment(ctx, name, spec.Number); err != nil {
			if errors.Is(err, store.ErrFragmentNotFound) {
				return 0, fragmentNotFound(formatFragmentNumber(spec.Number))
			}
			return 0, fmt.Errorf("get media %s: %w", name, err)
		}
		return spec.Number - 1, nil
	}
	kind := store.ServerTime
	if spec.Type == selProducerTimestamp {
		kind = store.ProducerTime
	}
	// Where NOW stands is read first: when no fragment starts at or after the time, delivery
	// starts there. Read after the search, it could lie past a fragment published in between
	// that the time selects (the search did not see it, NOW would step over it).
	now, err := m.startAfter(ctx, name, buf, startSpec{Type: selNow})
	if err != nil {
		return 0, err
	}
	n, found, err := m.findByTime(ctx, name, buf, kind, spec.Time)
	if err != nil {
		return 0, fmt.Errorf("get media %s: %w", name, err)
	}
	if !found {
		return now, nil
	}
	return n - 1, nil
}

// findByTime returns the fragment containing t (start <= t < start+duration, or start == t), else
// the first one starting after t, looking in the store and the live buffer.
func (m *media) findByTime(ctx context.Context, name string, buf *streamBuffer, kind store.TimeKind, t time.Time) (uint64, bool, error) {
	// A fragment lasts at most MaxFragmentDuration, so one that contains t starts in this window.
	window, err := m.s.store.TimeRange(ctx, name, kind, t.Add(-m.maxFragmentDuration), t, store.Cursor{}, 0)
	if err != nil {
		return 0, false, err
	}
	after, err := m.s.store.TimeRange(ctx, name, kind, t, time.Unix(1<<40, 0), store.Cursor{Time: t, Number: ^uint64(0)}, 1)
	if err != nil {
		return 0, false, err
	}
	var live []store.FragmentMeta
	for _, f := range buf.snapshot() {
		live = append(live, f.Meta)
	}
	var contain, next *store.FragmentMeta
	for _, set := range [][]store.FragmentMeta{window, after, live} {
		for i := range set {
			f := &set[i]
			start := f.Time(kind)
			switch {
			case !start.After(t) && (t.Before(start.Add(f.Duration)) || start.Equal(t)):
				if contain == nil || start.After(contain.Time(kind)) || (start.Equal(contain.Time(kind)) && f.Number < contain.Number) {
					contain = f
				}
			case start.After(t):
				if next == nil || start.Before(next.Time(kind)) || (start.Equal(next.Time(kind)) && f.Number < next.Number) {
					next = f
				}
			}
		}
	}
	switch {
	case contain != nil:
		return contain.Number, true, nil
	case next != nil:
		return next.Number, true, nil
	}
	return 0, false, nil
}

// consumer is one GetMedia response.
type consumer struct {
	m    *media
	name string
	buf  *streamBuffer
	w    http.ResponseWriter
	rc   *http.ResponseController
	pw   pacedWriter // w's media chunks
	last uint64      // the last number sent (or the start point)
	out  []byte      // reused per chunk
	tail bool        // an internal tail (tail.go): frames, not GetMedia chunks
	hdr  []byte      // a tail frame's header

	started time.Time // when the response started: fragments published later are live for it
}

var (
	errStreamDeleted = errors.New("stream deleted")
	errClientGone    = errors.New("client stopped reading")
)

func (c *consumer) run(ctx context.Context, notices <-chan struct{}, noFollow bool) {
	var idle <-chan time.Time
	var timer *time.Timer
	if d := c.m.getMediaIdle; d > 0 && !noFollow {
		timer = time.NewTimer(d)
		defer timer.Stop()
		idle = timer.C
	}
	for {
		delivered, err := c.deliverNext(ctx)
		switch {
		case errors.Is(err, errStreamDeleted):
			c.writeError(4000, "STREAM_DELETED")
			return
		case ctx.Err() != nil, errors.Is(err, errClientGone):
			return
		case err != nil:
			c.m.s.log.Error("get media", "stream", c.name, "err", err)
			c.writeError(5000, "INTERNAL_ERROR")
			return
		case delivered:
			if c.m.isClosing() { // Server.Close: a reader catching up ends too, between chunks
				if noFollow {
					// Its clean end would say "the live edge, nothing more": say the server
					// failed instead (5000 is retried from the continuation token).
					c.writeError(5000, "INTERNAL_ERROR")
				}
				return
			}
			if timer != nil {
				timer.Reset(c.m.getMediaIdle)
			}
			continue
		case noFollow:
			return
		}
		select {
		case <-notices: // a new fragment, or the stream was deleted (deliverNext tells)
		case <-idle:
			return
		case <-ctx.Done():
			return
		case <-c.m.closing:
			return
		}
	}
}

// deliverNext sends the fragment after c.last if there is one; false when there is none yet.
func (c *consumer) deliverNext(ctx context.Context) (bool, error) {
	for {
		if c.buf.isGone() {
			return false, errStreamDeleted
		}
		bf, oldest := c.buf.acquireAfter(c.last)
		sent, again, err := c.deliverFrom(ctx, bf, oldest)
		bf.release()
		if !again {
			return sent, err
		}
	}
}

// deliverFrom sends the fragment after c.last from the live buffer (bf, the first buffered one
// after c.last, referenced by the caller; oldest, the buffer's oldest number) or from the store.
// again: look again (the stored fragment was purged meanwhile).
func (c *consumer) deliverFrom(ctx context.Context, bf *liveFragment, oldest uint64) (sent, again bool, err error) {
	if oldest != 0 && oldest <= c.last+1 {
		// At the live edge: every later fragment is published to the buffer (in number
		// order) no later than it is stored, so the store has nothing to add.
		if bf == nil {
			return false, false, nil
		}
		return true, false, c.sendLive(bf)
	}
	metas, err := c.m.s.store.Range(ctx, c.name, c.last+1, 1)
	if errors.Is(err, store.ErrStreamNotFound) {
		return false, false, errStreamDeleted
	}
	if err != nil {
		return false, false, err
	}
	if bf != nil && len(metas) > 0 && bf.Meta.Number < metas[0].Number && !bf.unsynced.Load() {
		// Durable, yet the store's next fragment is a later one: the store deleted it since (a
		// byte cap or the disk quota reach this recent), as retention would. Skip what went.
		c.last = metas[0].Number - 1
		return false, true, nil
	}
	if len(metas) == 0 || (bf != nil && bf.Meta.Number <= metas[0].Number) {
		if bf == nil {
			return false, false, nil
		}
		return true, false, c.sendLive(bf)
	}
	var meta store.FragmentMeta
	var payload io.ReadCloser
	if c.tail {
		meta, err = c.readStored(ctx, metas[0].Number)
	} else {
		payload, meta, err = c.m.s.store.Open(ctx, c.name, metas[0].Number)
	}
	switch {
	case errors.Is(err, store.ErrFragmentNotFound):
		c.last = metas[0].Number // purged meanwhile: skip it
		return false, true, nil
	case errors.Is(err, store.ErrStreamNotFound):
		return false, false, errStreamDeleted
	case err != nil:
		return false, false, err
	}
	if payload != nil {
		defer payload.Close()
		return true, false, c.sendStored(meta, payload)
	}
	return true, false, c.send(meta, true)
}

// sendStored writes a stored fragment as a GetMedia chunk, read from the store as it goes out,
// with its trailing tags after it. A reader that takes its time holds a piece of the fragment,
// not all of it (read whole into c.out first, 8 readers of a 16 MiB stored fragment grew the heap
// by 160 MiB: TestSlowReadersOfStoredFragment).
func (c *consumer) sendStored(meta store.FragmentMeta, payload io.Reader) error {
	if c.m.testDeliver != nil {
		c.m.testDeliver(meta.Number, true)
	}
	var rerr error
	n, err := c.pw.stream(payload, &rerr)
	if rerr == nil && err == nil && n != meta.Size {
		rerr = fmt.Errorf("%d of its %d bytes: %w", n, meta.Size, io.ErrUnexpectedEOF)
	}
	switch {
	case rerr != nil: // the chunk is cut: the client sees a broken response, not a whole one
		return fmt.Errorf("reading stored fragment %d: %w", meta.Number, rerr)
	case err != nil:
		return fmt.Errorf("%w: %w", errClientGone, err) // end quietly
	}
	c.out = c.appendTrailingTags(c.out[:0], meta)
	return c.writeParts(meta, c.out)
}

// readStored reads fragment n's chunk from the store into c.out.
func (c *consumer) readStored(ctx context.Context, n uint64) (store.FragmentMeta, error) {
	var err error
	var meta store.FragmentMeta
	c.out, meta, err = readChunk(ctx, c.m.s.store, c.name, n, c.out[:0])
	return meta, err
}

// readChunk appends fragment n's stored chunk to b (Store.AppendPayload: one copy, the store's
// checks done).
func readChunk(ctx context.Context, st store.Store, name string, n uint64, b []byte) ([]byte, store.FragmentMeta, error) {
	return st.AppendPayload(ctx, name, n, b)
}

// send writes the stored fragment read into c.out: as a GetMedia chunk (with its trailing tags)
// or, for an internal tail, as a frame (tail.go).
func (c *consumer) send(meta store.FragmentMeta, fromStore bool) error {
	if c.m.testDeliver != nil {
		c.m.testDeliver(meta.Number, fromStore)
	}
	if c.tail {
		c.hdr = appendFrameHeader(c.hdr[:0], meta, len(c.out), true)
		return c.writeParts(meta, c.hdr, c.out)
	}
	c.out = c.appendTrailingTags(c.out, meta)
	return c.writeParts(meta, c.out)
}

// sendLive writes a buffered fragment's shared chunk as it is, without copying it (it is
// immutable), with its trailing tags after it (or its frame header before it), and flushes
// once.
func (c *consumer) sendLive(f *liveFragment) error {
	if c.m.testDeliver != nil {
		c.m.testDeliver(f.Meta.Number, false)
	}
	if c.tail {
		c.hdr = appendFrameHeader(c.hdr[:0], f.Meta, len(f.Chunk), !f.unsynced.Load())
		return c.writeParts(f.Meta, c.hdr, f.Chunk)
	}
	c.out = c.appendTrailingTags(c.out[:0], f.Meta)
	if err := c.writeParts(f.Meta, f.Chunk, c.out); err != nil {
		return err
	}
	if f.Published.After(c.started) { // live for this reader, not history it catches up on
		c.m.s.metrics.liveDelivery.Observe(time.Since(f.Published).Seconds())
	}
	return nil
}

// writeParts writes one fragment's parts and flushes (pacedWriter); then the fragment is the last
// one sent.
func (c *consumer) writeParts(meta store.FragmentMeta, parts ...[]byte) error {
	if err := c.pw.write(parts...); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err) // end quietly
	}
	c.last = meta.Number
	return nil
}

// appendTrailingTags appends the Tags that follow a chunk's Cluster: MILLIS_BEHIND_NOW and
// CONTINUATION_TOKEN.
func (c *consumer) appendTrailingTags(b []byte, meta store.FragmentMeta) []byte {
	now := c.m.s.cfg.Now()
	return mkv.AppendTags(b,
		mkv.SimpleTag{Name: mkv.TagMillisBehindNow, Value: strconv.FormatInt(max(0, now.Sub(meta.ServerTime).Milliseconds()), 10)},
		mkv.SimpleTag{Name: mkv.TagContinuationToken, Value: formatFragmentNumber(meta.Number)},
	)
}

func (c *consumer) write(b []byte) error {
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.m.writeTimeout))
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.rc.Flush()
}

func (c *consumer) writeError(id int, code string) {
	if c.tail {
		return // the tail's reader sees the end, and looks again where the stream is
	}
	c.out = appendErrorChunk(c.out[:0], c.last, id, code)
	_ = c.write(c.out)
}
