package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/mkv"
)

// StartSelectorType values of GetMedia (kvs-api.md §6).
const (
	StartNow               = "NOW"
	StartEarliest          = "EARLIEST"
	StartFragmentNumber    = "FRAGMENT_NUMBER"
	StartServerTimestamp   = "SERVER_TIMESTAMP"
	StartProducerTimestamp = "PRODUCER_TIMESTAMP"
	StartContinuationToken = "CONTINUATION_TOKEN"
)

// StartSelector says where GetMedia starts. Only the field matching Type is used.
type StartSelector struct {
	// Type is one of the Start* constants; "" means StartNow.
	Type string
	// AfterFragmentNumber is for StartFragmentNumber. kvs starts *with* this fragment (inclusive,
	// as the 2018 KVS docs describe); current AWS docs say "after" it.
	AfterFragmentNumber string
	// StartTimestamp is for StartServerTimestamp and StartProducerTimestamp: the chunk containing
	// the fragment with this timestamp. Sent with millisecond precision.
	StartTimestamp time.Time
	// ContinuationToken is for StartContinuationToken: delivery resumes after the fragment it names.
	ContinuationToken string
}

// Validate checks that the field Type needs is set.
func (s StartSelector) Validate() error {
	switch s.Type {
	case "", StartNow, StartEarliest:
	case StartFragmentNumber:
		if s.AfterFragmentNumber == "" {
			return errors.New("start selector FRAGMENT_NUMBER needs a fragment number")
		}
	case StartServerTimestamp, StartProducerTimestamp:
		if s.StartTimestamp.IsZero() {
			return fmt.Errorf("start selector %s needs a start timestamp", s.Type)
		}
	case StartContinuationToken:
		if s.ContinuationToken == "" {
			return errors.New("start selector CONTINUATION_TOKEN needs a continuation token")
		}
	default:
		return fmt.Errorf("start selector %q: want NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP or CONTINUATION_TOKEN", s.Type)
	}
	return nil
}

// wireTimestamp is an epoch-seconds JSON number with millisecond precision.
type wireTimestamp time.Time

func (t wireTimestamp) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	sign := ""
	if ms < 0 {
		sign, ms = "-", -ms
	}
	return fmt.Appendf(nil, "%s%d.%03d", sign, ms/1000, ms%1000), nil
}

func (s StartSelector) wire() any {
	type sel struct {
		StartSelectorType   string
		AfterFragmentNumber string         `json:",omitempty"`
		StartTimestamp      *wireTimestamp `json:",omitempty"`
		ContinuationToken   string         `json:",omitempty"`
	}
	out := sel{StartSelectorType: s.Type}
	if out.StartSelectorType == "" {
		out.StartSelectorType = StartNow
	}
	switch out.StartSelectorType {
	case StartFragmentNumber:
		out.AfterFragmentNumber = s.AfterFragmentNumber
	case StartServerTimestamp, StartProducerTimestamp:
		ts := wireTimestamp(s.StartTimestamp)
		out.StartTimestamp = &ts
	case StartContinuationToken:
		out.ContinuationToken = s.ContinuationToken
	}
	return out
}

// NoFollowHeader, set to "1" on a GetMedia request, makes kvs end the response at the live edge
// instead of waiting for new fragments. Real KVS ignores it; ConsumerConfig.IdleTimeout covers that.
const NoFollowHeader = "x-kvs-no-follow"

// Consumer defaults.
const (
	DefaultConsumerIdleTimeout = 5 * time.Second
	DefaultMaxAttempts         = 8
	DefaultRetryBackoff        = 250 * time.Millisecond
	maxRetryBackoff            = 10 * time.Second
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Stream is a stream name, or an ARN when it starts with "arn:".
	Stream string
	// Start is where the first request starts (zero: NOW). Later requests continue after the
	// last fragment delivered; a NOW whose connection ends before its first fragment starts
	// again from the server's time of its first answer (SERVER_TIMESTAMP), so that what was
	// published meanwhile is not stepped over.
	Start StartSelector
	// NoFollow stops at the live edge: the request carries NoFollowHeader, and because real KVS
	// ignores it, Next also ends (io.EOF) when no byte arrives for IdleTimeout.
	NoFollow bool
	// IdleTimeout is how long a connection may stay silent. With NoFollow the stream then ends
	// (io.EOF); without it the connection is assumed dead and reopened from the continuation
	// token. 0 means DefaultConsumerIdleTimeout with NoFollow and no limit without it (a live stream
	// may legitimately be silent for long).
	IdleTimeout time.Duration
	// MaxAttempts bounds reconnections in a row that fail before delivering a fragment (default
	// DefaultMaxAttempts); RetryBackoff is the first wait between them (default
	// DefaultRetryBackoff), doubling up to 10 s. A following read whose answer ends cleanly, or
	// goes silent for IdleTimeout, has not failed: it reconnects after RetryBackoff, for ever.
	MaxAttempts  int
	RetryBackoff time.Duration
	// MaxFragmentSize caps one fragment's frame and tag bytes (default: mkv's 50 MiB). A larger
	// fragment ends the read: Next returns an error wrapping mkv.ErrElementTooLarge.
	MaxFragmentSize int64
}

// ChunkError is an error chunk in a GetMedia or GetMediaForFragmentList response: a chunk whose
// tags carry AWS_KINESISVIDEO_ERROR_ID/ERROR_CODE (GetMedia) or
// AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE/EXCEPTION_MESSAGE (GetMediaForFragmentList). The service
// ends the response after it.
type ChunkError struct {
	FragmentNumber string
	// ID is the numeric error id (GetMedia: 3002, 4000, 4500-4506, 5000), 0 when absent.
	ID int
	// Code is the error code or message text the chunk carried.
	Code string
}

func (e *ChunkError) Error() string {
	s := "error chunk"
	if e.FragmentNumber != "" {
		s += " at fragment " + e.FragmentNumber
	}
	if e.ID != 0 {
		s += fmt.Sprintf(": %d", e.ID)
	}
	if e.Code != "" {
		s += ": " + e.Code
	}
	m := chunkErrorMeanings[e.ID]
	if e.Code == "STREAM_DELETED" { // kvs's 4000 for a stream deleted under the reader
		m = "the stream was deleted"
	}
	if m != "" {
		s += " (" + m + ")"
	}
	return s
}

// ErrorCode returns "ResourceNotFoundException" for id 4000, so that a missing fragment maps to
// the same handling as a missing stream where callers want that; otherwise the code text.
func (e *ChunkError) ErrorCode() string {
	if e.ID == 4000 {
		return "ResourceNotFoundException"
	}
	return e.Code
}

// serverFault reports whether the error chunk says the server failed (3002 writing to the
// stream, 5000 internal error), which a new request may not meet; a missing fragment or stream
// (4000) and the KMS errors (4500-4506) stay.
func (e *ChunkError) serverFault() bool { return e.ID == 3002 || e.ID == 5000 }

var chunkErrorMeanings = map[int]string{
	3002: "the server failed writing to the stream",
	4000: "the requested fragment was not found",
	5000: "internal server error",
}

// ChunkErrorOf returns the error an error chunk carries, or nil when f is not one (it has frames,
// or no error tags).
func ChunkErrorOf(f *mkv.Fragment) *ChunkError {
	if len(f.Frames) > 0 {
		return nil
	}
	id, hasID := f.Tag(mkv.TagErrorID)
	code, hasCode := f.Tag(mkv.TagErrorCode)
	if !hasID && !hasCode {
		if c, ok := f.Tag(mkv.TagExceptionErrorCode); ok {
			id, hasID = c, true
			code, hasCode = f.Tag(mkv.TagExceptionMessage)
		}
	}
	if !hasID && !hasCode {
		return nil
	}
	e := &ChunkError{Code: code}
	e.FragmentNumber, _ = f.Tag(mkv.TagFragmentNumber)
	if n, err := strconv.Atoi(strings.TrimSpace(id)); err == nil {
		e.ID = n
	} else if e.Code == "" {
		e.Code = id
	}
	return e
}

// Consumer reads a stream with GetMedia, one fragment at a time, reconnecting after a broken
// connection from the last continuation token (before the first fragment, with the original
// selector again: a NOW read that breaks before delivering anything may skip fragments completed
// in between). It is not safe for concurrent use: cancel Next's ctx to unblock it, then Close.
type Consumer struct {
	c   *Client
	cfg ConsumerConfig

	body    io.ReadCloser // current response, nil between connections
	reader  *mkv.FragmentReader
	idle    *time.Timer
	idleHit bool
	idleMu  sync.Mutex

	token     string    // continuation token (or fragment number) of the last delivered fragment
	nowAt     time.Time // Start NOW: the server's time (Date) of the first answer, until a token
	attempts  int       // connections in a row that failed before delivering anything
	quiet     bool      // the last connection ended quietly: wait RetryBackoff before the next
	delivered bool      // the current connection delivered a fragment
	connected bool      // a GetMedia request got an answer
	err       error     // sticky
	closed    bool
	reqCancel context.CancelFunc // of the current request
}

// errIdleBeforeAnswer: no answer to a GetMedia request came within IdleTimeout.
var errIdleBeforeAnswer = errors.New("getmedia: no answer within the idle timeout")

// NewConsumer returns a Consumer; it connects on the first Next.
func NewConsumer(c *Client, cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Stream == "" {
		return nil, errors.New("consumer: no stream")
	}
	if err := cfg.Start.Validate(); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	if cfg.IdleTimeout == 0 && cfg.NoFollow {
		cfg.IdleTimeout = DefaultConsumerIdleTimeout
	}
	// A field left zero (or negative) takes its default.
	cfg.MaxAttempts = cmp.Or(max(cfg.MaxAttempts, 0), DefaultMaxAttempts)
	cfg.RetryBackoff = cmp.Or(max(cfg.RetryBackoff, 0), DefaultRetryBackoff)
	return &Consumer{c: c, cfg: cfg}, nil
}

// ContinuationToken returns where a new GetMedia should resume to continue after the last
// fragment Next returned: its AWS_KINESISVIDEO_CONTINUATION_TOKEN tag, else its fragment number.
// Empty before the first fragment.
func (c *Consumer) ContinuationToken() string { return c.token }

// Next returns the next fragment, owned by the caller. At the end of a NoFollow read it returns
// io.EOF. A broken connection is reopened from the last continuation token with backoff; after
// MaxAttempts failures in a row the last error is returned. Before any connection has worked, an
// unreachable endpoint (connection refused, a TLS certificate that does not verify, plain HTTP at
// an https:// URL, an unknown host) is returned at once, and so is a failure to get credentials
// (*CredentialsError). HTTP errors are *APIError, error
// chunks *ChunkError; both are final, except the server's own failures (HTTP 5xx, error chunks
// 3002 and 5000), which count as a failed attempt. A fragment over MaxFragmentSize is final too
// (mkv.ErrElementTooLarge). When ctx is done the current connection is dropped (the next
// call resumes from the continuation token) and ctx.Err() is returned.
func (c *Consumer) Next(ctx context.Context) (*mkv.Fragment, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.closed {
		return nil, errors.New("consumer: closed")
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if c.body == nil {
			if c.attempts > 0 || c.quiet {
				if err := sleepCtx(ctx, backoff(c.cfg.RetryBackoff, max(c.attempts, 1))); err != nil {
					return nil, err
				}
			}
			c.quiet = false
			c.attempts++
			if err := c.connect(ctx); err != nil {
				if ctx.Err() != nil {
					c.attempts-- // not a failure of the connection: the caller gave up
					return nil, ctx.Err()
				}
				if errors.Is(err, errIdleBeforeAnswer) {
					c.attempts-- // silence, not a failure
					if c.cfg.NoFollow {
						c.err = io.EOF
						return nil, io.EOF
					}
					c.quiet = true
					continue
				}
				c.c.forgetDataEndpoint(c.cfg.Stream, string(types.APINameGetMedia))
				if permanent(err) || (!c.connected && (unreachable(err) || noCredentials(err))) || c.attempts >= c.cfg.MaxAttempts {
					c.err = err
					return nil, err
				}
				continue
			}
		}
		f, err := c.read(ctx)
		if err == nil {
			if ce := ChunkErrorOf(f); ce != nil {
				c.drop()
				if ce.serverFault() && c.attempts < c.cfg.MaxAttempts {
					// The server failed reading or writing (as an HTTP 5xx would say before the
					// answer): reopen from the continuation token, as after a broken connection.
					c.c.forgetDataEndpoint(c.cfg.Stream, string(types.APINameGetMedia))
					continue
				}
				c.err = fmt.Errorf("getmedia %s: %w", c.cfg.Stream, ce)
				return nil, c.err
			}
			if len(f.Frames) == 0 {
				continue // a tags-only document
			}
			if tok, ok := f.Tag(mkv.TagContinuationToken); ok && tok != "" {
				c.token = tok
			} else if num, ok := f.Tag(mkv.TagFragmentNumber); ok && num != "" {
				c.token = num
			}
			c.attempts = 0
			c.delivered = true
			return f, nil
		}
		idle := c.idleFired()
		c.drop()
		if ctx.Err() != nil {
			if !c.delivered {
				c.attempts-- // the caller gave up on this connection; it did not fail
			}
			return nil, ctx.Err()
		}
		switch {
		case idle && c.cfg.NoFollow:
			c.err = io.EOF
			return nil, io.EOF
		case errors.Is(err, io.EOF) && c.cfg.NoFollow:
			c.err = io.EOF
			return nil, io.EOF
		case errors.Is(err, mkv.ErrElementTooLarge):
			// Over MaxFragmentSize (or another size cap of the reader): the same fragment is as
			// large on every connection, so reconnecting only downloads it again.
			c.err = fmt.Errorf("getmedia %s: %w", c.cfg.Stream, err)
			return nil, c.err
		case errors.Is(err, io.EOF) || idle:
			// A quiet end while following: the server ended its answer cleanly (kvs with
			// GetMediaIdleTimeout, or any server that lets idle readers go), or nothing came for
			// IdleTimeout. Nothing failed, and a live stream may stay quiet for hours (a camera that
			// records on motion): it does not count against MaxAttempts, and the next request
			// waits RetryBackoff, so a server that keeps ending at once is polled, not hammered.
			c.attempts = 0
			c.quiet = true
		case c.attempts >= c.cfg.MaxAttempts:
			c.err = fmt.Errorf("getmedia %s: %w", c.cfg.Stream, err)
			return nil, c.err
		}
		// A broken or ended connection while following: reopen from the continuation token, at
		// the endpoint GetDataEndpoint names now.
		c.c.forgetDataEndpoint(c.cfg.Stream, string(types.APINameGetMedia))
	}
}

// read returns the next fragment of the current connection, unblocking on ctx. The idle timer
// runs only while read waits for bytes: the caller's time between two Next calls is not the
// server's silence (a NoFollow read by a caller slower than IdleTimeout per fragment ended early).
func (c *Consumer) read(ctx context.Context) (*mkv.Fragment, error) {
	body := c.body
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()
	if c.idle != nil {
		c.idle.Reset(c.cfg.IdleTimeout)
		defer c.idle.Stop()
	}
	return c.reader.Next()
}

func (c *Consumer) connect(ctx context.Context) error {
	sel := c.cfg.Start
	switch {
	case c.token != "":
		sel = StartSelector{Type: StartContinuationToken, ContinuationToken: c.token}
	case !c.nowAt.IsZero():
		// A NOW that lost its connection before its first fragment: NOW again would step over
		// what was published meanwhile. Start from when the first answer came instead (by the
		// server's clock, to the second: the fragment in progress then may come too).
		sel = StartSelector{Type: StartServerTimestamp, StartTimestamp: c.nowAt}
	}
	ep, err := c.c.DataEndpoint(ctx, c.cfg.Stream, types.APINameGetMedia)
	if err != nil {
		return err
	}
	in := map[string]any{"StartSelector": sel.wire()}
	if strings.HasPrefix(c.cfg.Stream, "arn:") {
		in["StreamARN"] = c.cfg.Stream
	} else {
		in["StreamName"] = c.cfg.Stream
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	// The request outlives this call (the body is read by later Next calls), so it does not take
	// ctx; read and Close unblock it by closing the body.
	reqCtx, reqCancel := context.WithCancel(context.WithoutCancel(ctx))
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, ep+"/getMedia", bytes.NewReader(body))
	if err != nil {
		reqCancel()
		return fmt.Errorf("getmedia %s: %w", c.cfg.Stream, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.cfg.NoFollow {
		req.Header.Set(NoFollowHeader, "1")
	}
	if err := c.c.Sign(ctx, req, body); err != nil {
		reqCancel()
		return err
	}
	// Until the answer comes, ctx and IdleTimeout end the request; afterwards read and drop do.
	stopCtx := context.AfterFunc(ctx, reqCancel)
	var silent atomic.Bool
	var hdrTimer *time.Timer
	if c.cfg.IdleTimeout > 0 {
		hdrTimer = time.AfterFunc(c.cfg.IdleTimeout, func() { silent.Store(true); reqCancel() })
	}
	resp, err := c.c.do(req)
	stopCtx()
	if hdrTimer != nil {
		hdrTimer.Stop()
	}
	if err != nil {
		reqCancel()
		if silent.Load() && ctx.Err() == nil {
			return errIdleBeforeAnswer
		}
		return fmt.Errorf("getmedia %s: %w", c.cfg.Stream, err)
	}
	if silent.Load() { // the timer fired as the answer came: the request is cancelled
		resp.Body.Close()
		reqCancel()
		return errIdleBeforeAnswer
	}
	c.reqCancel = reqCancel
	c.connected = true
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return newAPIError("GetMedia", resp)
	}
	if ctx.Err() != nil { // the answer raced with ctx: the request may be cancelled already
		resp.Body.Close()
		return ctx.Err()
	}
	c.body = resp.Body
	c.delivered = false
	if c.token == "" && c.nowAt.IsZero() && (sel.Type == "" || sel.Type == StartNow) {
		if c.nowAt, err = http.ParseTime(resp.Header.Get("Date")); err != nil {
			c.nowAt = time.Now()
		}
	}
	var src io.Reader = resp.Body
	if c.cfg.IdleTimeout > 0 {
		c.idleMu.Lock()
		c.idleHit = false
		c.idleMu.Unlock()
		b := resp.Body
		c.idle = time.AfterFunc(c.cfg.IdleTimeout, func() {
			c.idleMu.Lock()
			c.idleHit = true
			c.idleMu.Unlock()
			b.Close()
		})
		src = &idleReader{r: resp.Body, t: c.idle, d: c.cfg.IdleTimeout}
	}
	var opts []mkv.Option
	if c.cfg.MaxFragmentSize > 0 {
		opts = append(opts, mkv.WithMaxFragmentSize(c.cfg.MaxFragmentSize))
	}
	c.reader = mkv.NewFragmentReader(src, opts...)
	return nil
}

func (c *Consumer) idleFired() bool {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	return c.idleHit
}

// drop closes the current connection.
func (c *Consumer) drop() {
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	if c.body != nil {
		c.body.Close()
		c.body = nil
	}
	if c.reqCancel != nil {
		c.reqCancel()
		c.reqCancel = nil
	}
	c.reader = nil
}

// Close closes the connection. Next returns an error afterwards.
func (c *Consumer) Close() error {
	c.closed = true
	c.drop()
	return nil
}

// idleReader pushes its timer back whenever bytes arrive.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}

// do sends req with the configured HTTP client (the SDK's default when none was given).
func (c *Client) do(req *http.Request) (*http.Response, error) {
	if c.cfg.HTTPClient != nil {
		return c.cfg.HTTPClient.Do(req)
	}
	return http.DefaultClient.Do(req)
}

// backoff returns the wait before attempt n (n >= 1): first, doubled each time, capped at 10 s.
func backoff(first time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < maxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, maxRetryBackoff)
}

// sleepCtx waits d or until ctx is done. (A time.After timer nobody waits for any more is
// collected without Stop since Go 1.23.)
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
