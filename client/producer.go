package client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/mkv"
)

// DefaultMaxInFlight, DefaultMaxInFlightBytes and DefaultStalenessTimeout are the defaults of
// ProducerConfig.MaxInFlight, MaxInFlightBytes and StalenessTimeout.
const (
	DefaultMaxInFlight      = 16
	DefaultMaxInFlightBytes = 16 << 20
	DefaultStalenessTimeout = 30 * time.Second
)

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Stream is a stream name, or an ARN when it starts with "arn:".
	Stream string
	// MaxInFlight bounds the fragments sent or queued but not yet final (PERSISTED, or RECEIVED on
	// a stream without retention, or failed); Send blocks while it is reached. Default
	// DefaultMaxInFlight. Memory use is about MaxInFlight encoded fragments.
	MaxInFlight int
	// MaxInFlightBytes bounds the encoded bytes of those fragments the same way (default
	// DefaultMaxInFlightBytes); one fragment is always let through. 16 fragments of 1080p at
	// 20 Mbit/s and 2 s would hold 80 MB, which the process pays for in page faults without
	// sending any faster.
	MaxInFlightBytes int64
	// MaxAttempts bounds connection attempts in a row that make no progress (no fragment becomes
	// final) before the producer gives up (default DefaultMaxAttempts). RetryBackoff is the first
	// wait between attempts (default DefaultRetryBackoff), doubling up to 10 s.
	MaxAttempts  int
	RetryBackoff time.Duration
	// StalenessTimeout is how long a connection may receive nothing at all (no ACK, no IDLE)
	// while fragments sent on it wait for their final ACK: then it is taken as dead (a frozen
	// server, a middlebox that dropped the flow while TCP stays open) and the producer
	// reconnects, as the KVS producer SDKs' connection staleness check does (the C++ SDK's
	// StreamDefinition default is 30 s, as this one's). kvs server sends IDLE every 3 s. It bounds
	// the control-plane calls a connection waits for (DescribeStream, GetDataEndpoint) the same way.
	// Default DefaultStalenessTimeout; negative: never.
	StalenessTimeout time.Duration
	// OnAck, if set, is called for every ACK event of every connection (IDLE included), in order,
	// from the producer's ack-reading goroutine. It must not block for long: it delays ACK reading.
	OnAck func(Ack)
	// RetentionHours, if not nil, is the stream's DataRetentionInHours, which decides the final
	// ACK (0: RECEIVED, else PERSISTED). Nil: the producer asks DescribeStream before connecting
	// (with a spool, again and again until the endpoint answers).
	RetentionHours *int
	// CreateRetentionHours, if not nil, lets the producer create the stream, with that
	// DataRetentionInHours, when DescribeStream says it does not exist (a kvs convenience: the
	// endpoint may be unreachable when the producer starts). Only with RetentionHours nil.
	CreateRetentionHours *int
	// Spool, if set, keeps every fragment on disk until it is final (see Spool): Send writes the
	// fragment to the spool, synced, and returns without waiting for the network, and the
	// producer sends the spool's fragments oldest first, those an earlier process left included.
	// While the producer is not closing it never gives up on an endpoint that cannot be reached:
	// the spool grows instead (up to its maximum size, then its oldest fragments go). The
	// Producer does not close the Spool.
	Spool *Spool
	// SpoolRate, when positive, caps the rate at which the spool's backlog is sent, in bytes per
	// second: fragments with newer ones queued behind them go out no faster than that, while the
	// newest (the live edge, when the backlog is sent) goes at once. The backlog is always sent
	// before the live edge, in order (PutMedia wants timecodes that do not go back), so the live
	// edge trails by the backlog's size divided by (SpoolRate - the camera's bit rate). 0 sends
	// the backlog as fast as the connection takes it.
	SpoolRate int64
	// SpoolWait makes Send wait while the spool is full, until the server has taken enough of it,
	// instead of letting the spool drop its oldest fragments. It is for a source that can wait (a
	// file, read faster than the link takes it: kvs put-media sets it for one); a live source
	// cannot, and then losing the oldest video is the better choice.
	SpoolWait bool
}

// ProducerStats counts what a Producer did. Bytes are encoded cluster bytes; a replayed fragment
// counts once in Fragments/Bytes and again in Resent.
type ProducerStats struct {
	Fragments   int   // accepted by Send
	Bytes       int64 // of those fragments
	Stored      int   // final (PERSISTED, or RECEIVED without retention)
	Failed      int
	Connections int
	Resent      int // fragments sent again after a broken connection
	// With a spool: Recovered fragments were left in it by an earlier process (they count in
	// Stored once final, not in Fragments); Spool is the spool's own account.
	Recovered int
	Spool     SpoolStats
	// LastError is why the last attempt to connect or send failed, "" once a connection is
	// answered (or none was tried yet); Since is when the failures began. Meanwhile a producer
	// with a spool keeps one fragment out of it, not MaxInFlight.
	LastError string
	Since     time.Time
}

// entry is one fragment in the window.
type entry struct {
	header   []byte // EBML header, Segment start, Info, Tracks: how a connection for it starts
	data     []byte // Tags (optional) + Cluster; nil once final
	timecode int64
	scale    uint64
	seq      uint64 // its spool record, 0 without a spool
	number   string
	sent     int  // times written to a connection
	writing  bool // a connection's writer is handing data to the transport
	final    bool
	err      error
}

// Producer uploads fragments to one stream with PutMedia.
//
// Fragments go out in Send order on one long-lived PutMedia connection: the EBML header, an
// unknown-size Segment, Info and Tracks once, then one known-size Cluster per fragment, with
// ABSOLUTE timecodes (a fragment's cluster timecode times its TimecodeScale is its producer
// timestamp, so fragments keep their timestamps when resent). A fragment whose tracks, scale or
// DocType differ from the connection's ends that connection once everything before it is
// acknowledged, and a new one starts with the new header.
//
// With ProducerConfig.Spool, Send only writes the fragment to the spool; the producer's own
// goroutine takes the spool's fragments in order into its window, and a fragment leaves the spool
// when it is final.
//
// Delivery is at least once. When a connection breaks (a write or read error, the response ending
// before every fragment sent on it is final, or a retryable ERROR ack), the producer reconnects
// with exponential backoff and sends again, in order, every fragment that is not final. Before any
// connection has worked, an unreachable endpoint (connection refused, a TLS certificate that does
// not verify, plain HTTP at an https:// URL, an unknown host) stops the producer at once instead:
// that is a wrong endpoint or a server not started, which retrying hides for seconds; once a
// connection has worked, the same errors are retried (a server restarting). A fragment
// the server stored but whose PERSISTED ack was lost is then stored twice, with identical bytes
// and producer timestamp: readers that must not see duplicates drop a fragment whose producer
// timestamp equals one already seen. Nothing is lost unless reported by Close.
//
// A non-retryable ERROR ack about the media (bad MKV, timecodes going backwards, a fragment too
// long or too large, ...) fails that fragment only: it is reported by Close, and the producer goes
// on with the next fragment on a new connection. Stream-level errors (stream not active or deleted,
// KMS denials) stop the producer: later Sends and Close return them.
//
// Send and Close may be called from one goroutine at a time; Stats from any.
type Producer struct {
	c   *Client
	cfg ProducerConfig

	ctx    context.Context // of the background goroutine
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu      sync.Mutex
	changed *sync.Cond // window, closing or err changed
	window  []*entry   // in send order; final entries are trimmed from the front
	closing bool       // Close called: no more Sends
	err     error      // the reason the producer stopped (sticky)
	failed  []FragmentFailure
	stats   ProducerStats
	header  []byte // the last fragment's stream header (Send's goroutine only)

	// With a spool: the pump goroutine moves the spool's fragments into the window.
	pumpDone chan struct{} // closed when it returned
	pumped   bool          // it handed over the last fragment of the sealed spool (under mu)

	connected bool // a PutMedia request got an answer (run's goroutine only)
}

// NewProducer validates cfg and starts the producer's background goroutine, which connects when
// the first fragment is sent.
func NewProducer(c *Client, cfg ProducerConfig) (*Producer, error) {
	if cfg.Stream == "" {
		return nil, errors.New("producer: no stream")
	}
	// A field left zero (or negative) takes its default.
	cfg.MaxInFlight = cmp.Or(max(cfg.MaxInFlight, 0), DefaultMaxInFlight)
	cfg.MaxInFlightBytes = cmp.Or(max(cfg.MaxInFlightBytes, 0), DefaultMaxInFlightBytes)
	cfg.MaxAttempts = cmp.Or(max(cfg.MaxAttempts, 0), DefaultMaxAttempts)
	cfg.RetryBackoff = cmp.Or(max(cfg.RetryBackoff, 0), DefaultRetryBackoff)
	cfg.StalenessTimeout = cmp.Or(cfg.StalenessTimeout, DefaultStalenessTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{c: c, cfg: cfg, ctx: ctx, cancel: cancel, done: make(chan struct{}), pumpDone: make(chan struct{})}
	p.changed = sync.NewCond(&p.mu)
	if cfg.Spool != nil {
		p.stats.Recovered = cfg.Spool.Stats().Recovered
		go p.pump()
	} else {
		close(p.pumpDone)
		p.pumped = true
	}
	go p.run()
	return p, nil
}

// Send encodes f and queues it for upload. It blocks while MaxInFlight fragments are not final
// (backpressure), until ctx is done (ctx.Err()) or the producer stops (its error). f is not
// retained. A fragment needs at least one frame and a cluster timecode >= 0; producer tags in
// f.Tags are sent before the cluster unless their names start with "AWS_" (reserved).
//
// With a spool, Send writes f to the spool and returns once it is synced there; it does not wait
// for the network, and fails only when the spool cannot be written (or the producer stopped).
func (p *Producer) Send(ctx context.Context, f *mkv.Fragment) error {
	if len(f.Frames) == 0 {
		return errors.New("producer: fragment without frames")
	}
	var data []byte
	var user []mkv.SimpleTag
	for _, t := range f.Tags {
		if !strings.HasPrefix(t.Name, "AWS_") {
			user = append(user, t)
		}
	}
	size := 1024
	for i := range f.Frames {
		size += len(f.Frames[i].Data) + 32
	}
	for _, t := range user {
		size += len(t.Name) + len(t.Value) + len(t.Binary) + 32
	}
	data = bufpool.Get(size) // back to the pool once final: see recycle
	if len(user) > 0 {
		data = mkv.AppendTags(data, user...)
	}
	data, err := mkv.AppendCluster(data, f.Timecode, f.Frames)
	if err != nil {
		return fmt.Errorf("producer: fragment at %d: %w", f.Timecode, err)
	}
	e := &entry{data: data, timecode: f.Timecode, scale: cmp.Or(f.TimecodeScale, mkv.DefaultTimecodeScale)}
	e.header = p.streamHeader(cmp.Or(f.DocType, "matroska"), e.scale, f.Tracks)
	if p.cfg.Spool != nil {
		return p.spool(ctx, e)
	}
	return p.enqueue(ctx, e)
}

// streamHeader returns how a PutMedia body for fragments with these tracks starts: the previous
// fragment's header when it is the same bytes.
func (p *Producer) streamHeader(docType string, scale uint64, tracks []mkv.Track) []byte {
	h := mkv.AppendEBMLHeader(nil, docType)
	h = mkv.AppendSegmentStart(h)
	h = mkv.AppendInfo(h, scale, "kvs")
	h = mkv.AppendTracks(h, tracks)
	if bytes.Equal(h, p.header) {
		return p.header
	}
	p.header = h
	return h
}

// enqueue adds e to the window once there is room (MaxInFlight, MaxInFlightBytes), until ctx is
// done or the producer stops.
func (p *Producer) enqueue(ctx context.Context, e *entry) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.changed.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.err != nil:
			return p.err
		case p.closing && e.seq == 0:
			return errors.New("producer: Send after Close")
		case ctx.Err() != nil:
			return ctx.Err()
		}
		limit := p.cfg.MaxInFlight
		if e.seq != 0 && p.stats.LastError != "" {
			limit = 1 // the spool holds the rest until a connection works: memory stays small
		}
		if n, size := p.pendingLocked(); n == 0 || n < limit && size+int64(len(e.data)) <= p.cfg.MaxInFlightBytes {
			break
		}
		p.changed.Wait()
	}
	p.window = append(p.window, e)
	if e.seq == 0 {
		p.stats.Fragments++
		p.stats.Bytes += int64(len(e.data))
	}
	p.changed.Broadcast()
	return nil
}

// pendingLocked counts fragments not yet final, and their bytes.
func (p *Producer) pendingLocked() (n int, size int64) {
	for _, e := range p.window {
		if !e.final {
			n++
			size += int64(len(e.data))
		}
	}
	return n, size
}

func (p *Producer) pendingCountLocked() int {
	n, _ := p.pendingLocked()
	return n
}

// recycle hands the encoded fragment b back to the buffer pool (Send encodes each fragment into
// a buffer of its own: at 1080p, fresh 5 MB buffers per fragment cost more in zeroing and page
// faults than the encoding itself). Call it only once nothing reads b any more: the entry is final
// (replays skip final entries) and no writer is in pw.Write(b).
func (p *Producer) recycle(b []byte) { bufpool.Put(b) }

// Stats returns counters so far. Safe for concurrent use.
func (p *Producer) Stats() ProducerStats {
	p.mu.Lock()
	st := p.stats
	p.mu.Unlock()
	if p.cfg.Spool != nil {
		st.Spool = p.cfg.Spool.Stats()
	}
	return st
}

// Close ends the upload: it waits until every sent fragment is final, ends the request body and
// the connection, and returns nil when every fragment was stored, else a *ProducerError listing the
// failures. When ctx is done first, the producer is stopped and the fragments still pending are
// reported as failed with ctx's error.
//
// With a spool, Close waits until the spool is sent too; whatever is not final when it returns
// (ctx done, or the endpoint given up on) stays in the spool, and the ProducerError counts it.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.changed.Broadcast()
	p.mu.Unlock()
	if p.cfg.Spool != nil {
		p.cfg.Spool.seal()
	}
	select {
	case <-p.done:
	default:
		select {
		case <-p.done:
		case <-ctx.Done():
			p.mu.Lock()
			pending := p.err == nil && (p.pendingCountLocked() > 0 || !p.pumped)
			p.mu.Unlock()
			if pending {
				p.stop(fmt.Errorf("close: %w", ctx.Err()))
			}
			p.cancel()
			<-p.done
		}
	}
	p.cancel()
	<-p.pumpDone
	p.mu.Lock()
	defer p.mu.Unlock()
	pe := &ProducerError{Failed: append([]FragmentFailure(nil), p.failed...), Err: p.err}
	if sp := p.cfg.Spool; sp != nil {
		st := sp.Stats()
		pe.Spooled, pe.Dropped, pe.Corrupt, pe.SpoolDir = st.Fragments, st.Dropped, st.Corrupt, sp.Dir()
	}
	if pe.Err == nil && len(pe.Failed) == 0 && pe.Spooled == 0 && pe.Dropped == 0 && pe.Corrupt == 0 {
		return nil
	}
	return pe
}

// stop records err as the reason the producer stopped, fails every pending fragment with it and
// cancels the background work.
func (p *Producer) stop(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	for _, e := range p.window {
		switch {
		case e.final:
		case e.seq != 0: // kept in the spool for a later producer
			p.abandonLocked(e)
		default:
			p.finishLocked(e, err)
		}
	}
	p.trimLocked()
	p.changed.Broadcast()
	p.mu.Unlock()
	p.cancel()
}

// finishLocked marks e final; err nil means stored.
func (p *Producer) finishLocked(e *entry, err error) {
	if e.final {
		return
	}
	e.final = true
	if !e.writing { // else the writer recycles it when its Write returns
		p.recycle(e.data)
	}
	e.data = nil
	if err != nil {
		e.err = err
		p.stats.Failed++
		p.failed = append(p.failed, FragmentFailure{Timecode: e.timecode, FragmentNumber: e.number, Err: err})
	} else {
		p.stats.Stored++
	}
	if e.seq != 0 {
		p.cfg.Spool.done(e.seq) // stored, or failed in a way that sending again cannot fix
	}
}

// trimLocked drops final entries from the front of the window.
func (p *Producer) trimLocked() {
	i := 0
	for i < len(p.window) && p.window[i].final {
		i++
	}
	if i > 0 {
		p.window = append(p.window[:0], p.window[i:]...)
	}
}

// run is the background goroutine: one PutMedia connection after another until Close.
func (p *Producer) run() {
	defer close(p.done)
	finalEvent := ""
	attempts := 0
	for {
		p.mu.Lock()
		for p.err == nil && p.pendingCountLocked() == 0 && !(p.closing && p.pumped) {
			p.changed.Wait()
		}
		if p.err != nil || (p.closing && p.pumped && p.pendingCountLocked() == 0) {
			p.mu.Unlock()
			return
		}
		// With a spool, nothing is given up on before Close: the spool holds what waits.
		persist := p.cfg.Spool != nil && !p.closing
		p.mu.Unlock()

		if attempts > 0 {
			if err := sleepCtx(p.ctx, backoff(p.cfg.RetryBackoff, attempts)); err != nil {
				return // stopped
			}
		}
		var err error
		progress := false
		if finalEvent == "" {
			finalEvent, err = p.finalAck()
		}
		if err == nil {
			progress, err = p.connection(finalEvent)
		}
		if p.ctx.Err() != nil {
			return
		}
		if err != nil { // the next connection asks where the stream is written now
			p.c.forgetDataEndpoint(p.cfg.Stream, string(types.APINamePutMedia))
		}
		p.mu.Lock()
		switch {
		case err != nil && p.stats.LastError == "":
			p.stats.LastError, p.stats.Since = err.Error(), time.Now()
		case err != nil:
			p.stats.LastError = err.Error()
		default:
			p.stats.LastError, p.stats.Since = "", time.Time{}
		}
		p.mu.Unlock()
		var ae *AckErr
		switch {
		case err == nil:
			attempts = 0
			continue
		case errors.As(err, &ae) && fatalAck(ae.Ack.ErrorID), permanent(err), !persist && !p.connected && unreachable(err):
			p.stop(err)
			return
		}
		if progress {
			attempts = 0
		}
		attempts++
		if !persist && attempts >= p.cfg.MaxAttempts {
			p.stop(fmt.Errorf("giving up after %d attempts: %w", attempts, err))
			return
		}
	}
}

// finalAck returns the ACK event type that makes a fragment final for this stream.
func (p *Producer) finalAck() (string, error) {
	hours := p.cfg.RetentionHours
	if hours == nil {
		in := &kinesisvideo.DescribeStreamInput{}
		if strings.HasPrefix(p.cfg.Stream, "arn:") {
			in.StreamARN = aws.String(p.cfg.Stream)
		} else {
			in.StreamName = aws.String(p.cfg.Stream)
		}
		out, err := p.describeStream(in)
		var nf *types.ResourceNotFoundException
		if err != nil && errors.As(err, &nf) && p.cfg.CreateRetentionHours != nil && in.StreamName != nil {
			created, cerr := p.createStream(*p.cfg.CreateRetentionHours)
			if cerr != nil {
				return "", cerr
			}
			if created {
				return finalEventFor(*p.cfg.CreateRetentionHours), nil
			}
			// Created by someone else meanwhile, maybe with another retention: ask again.
			out, err = p.describeStream(in)
		}
		switch {
		case err != nil:
			return "", fmt.Errorf("describe stream %s: %w", p.cfg.Stream, err)
		default:
			h := int(aws.ToInt32(out.StreamInfo.DataRetentionInHours))
			hours = &h
		}
	}
	return finalEventFor(*hours), nil
}

func (p *Producer) describeStream(in *kinesisvideo.DescribeStreamInput) (*kinesisvideo.DescribeStreamOutput, error) {
	ctx, cancel := p.controlCtx(p.ctx)
	defer cancel()
	return p.c.Control.DescribeStream(ctx, in)
}

// controlCtx bounds a control-plane call that a connection waits for (DescribeStream,
// CreateStream, GetDataEndpoint) by StalenessTimeout, as the connection itself is: the SDK's HTTP
// client has no timeout, and a server that froze, or a flow that a middlebox dropped while TCP
// stays up, held the call, and with it the producer and its Close, for ever (MaxAttempts never
// came into play).
func (p *Producer) controlCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.cfg.StalenessTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.cfg.StalenessTimeout)
}

// finalEventFor returns the final ACK of a stream with this DataRetentionInHours.
func finalEventFor(hours int) string {
	if hours == 0 {
		return AckReceived
	}
	return AckPersisted
}

// createStream creates the stream (CreateRetentionHours) and says whether it did; one that exists
// by now is fine.
func (p *Producer) createStream(hours int) (created bool, err error) {
	ctx, cancel := p.controlCtx(p.ctx)
	defer cancel()
	created, err = p.c.CreateStreamIfMissing(ctx, p.cfg.Stream, hours)
	if err != nil {
		return false, fmt.Errorf("create stream %s: %w", p.cfg.Stream, err)
	}
	return created, nil
}

// CreateStreamIfMissing creates stream name with a data retention of hours (0: none) and says
// whether it did: a stream of that name that exists already, made by another producer a moment
// before (ResourceInUseException), is no error.
func (c *Client) CreateStreamIfMissing(ctx context.Context, name string, hours int) (created bool, err error) {
	in := &kinesisvideo.CreateStreamInput{StreamName: aws.String(name)}
	if hours > 0 {
		in.DataRetentionInHours = aws.Int32(int32(min(hours, math.MaxInt32))) //nolint:gosec // bounded
	}
	_, err = c.Control.CreateStream(ctx, in)
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) {
		return false, nil
	}
	return err == nil, err
}

// fatalAck reports ERROR ack ids after which no fragment can succeed on this stream.
func fatalAck(id int) bool {
	switch id {
	case 4008, 4507, 4500, 4501, 4502, 4504, 4505, 4506:
		return true
	}
	return false
}
