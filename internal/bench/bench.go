// Package bench is the load generator behind `kvs bench`: N concurrent real-time PutMedia
// producers, each with one live GetMedia (NOW) consumer, measuring the PERSISTED ack latency and
// the live delivery latency of every fragment.
//
// The producer is a lean raw PutMedia sender, not client.Producer: it paces synthetic H.264-like
// frames in real time (one keyframe per fragment, about KeyframeRatio times a delta frame), writes
// each frame to the connection as it is "captured" inside an unknown-size Cluster, and ends each
// fragment with an AWS_KINESISVIDEO_END_OF_FRAGMENT Tags element, as the KVS producer SDK does.
// So the last byte of a fragment leaves the producer when its last frame is captured, and both
// latencies start there:
//
//   - persisted ack latency: the fragment's last byte written to the connection → its PERSISTED ack
//     read from the response;
//   - delivery latency: the same instant → the consumer has read the whole GetMedia chunk
//     (through the trailing Tags that follow the Cluster).
//
// The consumer is a minimal EBML walker that reads only element headers and the cluster timecode
// and discards the frame bytes, so that measuring costs little CPU next to the server under test.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"golang.org/x/sync/errgroup"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

// Defaults of the Config fields.
const (
	DefaultFPS           = 30
	DefaultKeyframeRatio = 9
	DefaultDrainTimeout  = 15 * time.Second
)

// Config describes one benchmark run.
type Config struct {
	// Client reaches the control plane (CreateStream, GetDataEndpoint, DeleteStream) and signs
	// the media requests with its credentials.
	Client *client.Client
	// Streams is the number of concurrent streams (one producer and one consumer each).
	Streams int
	// Bitrate is each stream's media rate in bits per second.
	Bitrate int64
	// FragmentDuration is the length of one fragment (one keyframe interval).
	FragmentDuration time.Duration
	// Duration is how long each producer sends: it sends Duration/FragmentDuration fragments.
	Duration time.Duration
	// FPS is the frame rate (default 30).
	FPS int
	// KeyframeRatio is the size of a keyframe over a delta frame (default 9).
	KeyframeRatio float64
	// NoConsumers leaves out the GetMedia consumers (ingest only).
	NoConsumers bool
	// StreamPrefix names the streams PREFIX-0 ... PREFIX-(N-1); default "bench-<unix seconds>".
	StreamPrefix string
	// DeleteStreams deletes the streams at the end.
	DeleteStreams bool
	// Warmup leaves the fragments whose last byte was sent in the first Warmup of the run out
	// of the latency figures (they still count for errors, fragments and bytes): the server's
	// first seconds under a new load include its heap growing to size and connection set-up.
	Warmup time.Duration
	// DrainTimeout bounds the wait for outstanding acks and deliveries after the last fragment
	// (default 15 s). Fragments still missing then count as errors.
	DrainTimeout time.Duration
	// Log, when set, receives progress lines (stream setup, start, drain).
	Log func(format string, a ...any)
}

func (c *Config) setDefaults() {
	if c.FPS <= 0 {
		c.FPS = DefaultFPS
	}
	if c.KeyframeRatio <= 0 {
		c.KeyframeRatio = DefaultKeyframeRatio
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.StreamPrefix == "" {
		c.StreamPrefix = fmt.Sprintf("bench-%d", time.Now().Unix())
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

// Validate checks the Config's numbers.
func (c Config) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("bench: no client")
	case c.Streams < 1:
		return errors.New("bench: streams must be at least 1")
	case c.Bitrate < 8_000:
		return errors.New("bench: bitrate must be at least 8 kbit/s")
	case c.FragmentDuration < 100*time.Millisecond || c.FragmentDuration > 30*time.Second:
		return errors.New("bench: fragment duration must be between 100ms and 30s")
	case c.Duration < c.FragmentDuration:
		return errors.New("bench: duration must be at least one fragment duration")
	case c.FPS < 0 || c.FPS > 240:
		return errors.New("bench: fps must be between 1 and 240")
	}
	return nil
}

// Latency summarizes latencies in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Result is the outcome of a run.
type Result struct {
	Streams int
	// Duration is the mean streaming time of a producer: its first frame's capture time → its
	// last fragment's last byte (Config.Duration when every producer kept real time).
	Duration  time.Duration
	Fragments int   // fragments with a PERSISTED ack
	Bytes     int64 // media bytes (frames) of those fragments
	Sent      int   // fragments whose last byte was written
	Delivered int   // fragments a consumer received whole
	// Errors counts every failure: ERROR acks, failed connections, GetMedia error chunks,
	// fragments without a PERSISTED ack or (with consumers) not delivered by the end of the drain.
	Errors       int
	ErrorsByKind map[string]int
	// FirstErrors keeps the first few error messages.
	FirstErrors  []string
	PersistedAck Latency
	Delivery     Latency
	// Connect is the producers' connection set-up, before the measured run: PutMedia request
	// sent (new TCP connection, headers, the MKV header) → its 200 response.
	Connect Latency
	// BySecond breaks the latencies down by the second of the run in which each fragment's last
	// byte was sent (warm-up included): where a tail comes from, such as every stream's first
	// fragment.
	BySecond []Second
	// ProducerLag is the largest delay of a frame write behind its capture time: a producer that
	// could not keep real time (server or client saturated) shows here.
	ProducerLag time.Duration
}

// Second is the latency summary of the fragments sent in one second of the run.
type Second struct {
	Second       int     `json:"second"` // since the first producer started
	Fragments    int     `json:"fragments"`
	PersistedP99 float64 `json:"persisted_ack_p99_ms"`
	DeliveryP99  float64 `json:"delivery_p99_ms,omitempty"`
}

// IngestMbps is the persisted media rate in megabits per second.
func (r Result) IngestMbps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / 1e6 / r.Duration.Seconds()
}

// fragRecord is what one stream knows about one fragment; times are zero until they happen.
type fragRecord struct {
	size      int
	lastByte  time.Time
	persisted time.Time
	delivered time.Time
}

type stream struct {
	r      *run
	name   string
	arn    string
	index  int
	putURL string
	getURL string

	mu    sync.Mutex
	frags map[int64]*fragRecord // by cluster timecode (ms, ABSOLUTE)
	sent  int
	start time.Time     // the first frame's capture time
	end   time.Time     // the last fragment's last byte
	done  chan struct{} // closed when produce has ended
	got   chan struct{} // receives when a fragment was delivered (1 slot)

	pw          *io.PipeWriter // the PutMedia request body (connect)
	acksDone    chan struct{}  // closed when the PutMedia response has been read
	connectTime time.Duration  // request sent → 200 response (connect)
}

type run struct {
	cfg       Config
	hc        *http.Client
	frameData []byte
	errMu     sync.Mutex
	errs      map[string]int
	first     []string
	maxLag    atomic.Int64
	t0        time.Time // when the first producer starts
}

func (r *run) fail(kind string, err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	r.errs[kind]++
	if len(r.first) < 10 && err != nil {
		r.first = append(r.first, kind+": "+err.Error())
	}
}

// Run creates the streams, runs the producers and consumers for cfg.Duration, waits for the
// outstanding acks and deliveries, and returns the figures. It returns an error only when the run
// could not start (stream creation, endpoints); failures during the run are counted in Result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg.setDefaults()
	r := &run{cfg: cfg, errs: map[string]int{}}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2 * cfg.Streams,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	defer tr.CloseIdleConnections()
	r.hc = &http.Client{Transport: tr}
	rng := rand.New(rand.NewPCG(1, 2))
	r.frameData = make([]byte, 1<<20+frameBytes(cfg, true))
	for i := range r.frameData {
		r.frameData[i] = byte(rng.Uint32())
	}

	streams := make([]*stream, cfg.Streams)
	for i := range streams {
		streams[i] = &stream{r: r, index: i, name: fmt.Sprintf("%s-%d", cfg.StreamPrefix, i),
			frags: map[int64]*fragRecord{}, done: make(chan struct{}), got: make(chan struct{}, 1)}
	}
	cfg.Log("creating %d streams", cfg.Streams)
	if err := forEach(ctx, streams, 16, r.setup); err != nil {
		return Result{}, err
	}
	if cfg.DeleteStreams {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = forEach(dctx, streams, 16, func(ctx context.Context, s *stream) error {
				_, err := cfg.Client.Control.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(s.arn)})
				return err
			})
		}()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var consumers sync.WaitGroup
	if !cfg.NoConsumers {
		cfg.Log("opening %d GetMedia (NOW) consumers", cfg.Streams)
		ready := make(chan error, cfg.Streams)
		for _, s := range streams {
			consumers.Go(func() { s.consume(runCtx, ready) })
		}
		for range streams {
			if err := <-ready; err != nil {
				r.fail("get-media", err)
			}
		}
	}

	// Producers connect first (at most 16 at once), then start spread over one fragment
	// duration, as independent cameras would be: all fragments ending at the same instant is a
	// burst no real fleet produces. A producer that could not connect counts as an error and
	// sends nothing.
	cfg.Log("opening %d PutMedia connections", cfg.Streams)
	var connected []*stream
	var connMu sync.Mutex
	_ = forEach(runCtx, streams, 16, func(_ context.Context, s *stream) error {
		// runCtx, not the group's context: that one ends when the group does.
		if err := s.connect(runCtx); err != nil {
			r.fail("put-media", fmt.Errorf("stream %s: %w", s.name, err))
			close(s.done)
			return nil
		}
		connMu.Lock()
		connected = append(connected, s)
		connMu.Unlock()
		return nil
	})
	slices.SortFunc(connected, func(a, b *stream) int { return a.index - b.index })
	nFrags := int(cfg.Duration / cfg.FragmentDuration)
	t0 := time.Now().Add(100 * time.Millisecond)
	r.t0 = t0
	cfg.Log("streaming: %d streams × %d fragments of %v at %s", len(connected), nFrags, cfg.FragmentDuration, FormatBitrate(cfg.Bitrate))
	var producers sync.WaitGroup
	for i, s := range connected {
		start := t0.Add(time.Duration(int64(cfg.FragmentDuration) * int64(i) / int64(len(connected))))
		producers.Go(func() { s.produce(runCtx, start, nFrags) })
	}
	producers.Wait()
	cfg.Log("producers done; waiting up to %v for deliveries", cfg.DrainTimeout)
	if !cfg.NoConsumers {
		deadline := time.NewTimer(cfg.DrainTimeout)
	drain:
		for _, s := range streams {
			for !s.allDelivered() {
				select {
				case <-s.got:
				case <-deadline.C:
					break drain
				case <-ctx.Done():
					break drain
				}
			}
		}
		deadline.Stop()
	}
	cancel()
	consumers.Wait()
	return r.result(streams), nil
}

// forEach runs fn for every stream with at most n at once and returns the first error.
func forEach(ctx context.Context, streams []*stream, n int, fn func(context.Context, *stream) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(n)
	for _, s := range streams {
		g.Go(func() error { return fn(ctx, s) })
	}
	return g.Wait()
}

func (r *run) setup(ctx context.Context, s *stream) error {
	c := r.cfg.Client
	out, err := c.Control.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String(s.name),
		MediaType: aws.String("video/h264"), DataRetentionInHours: aws.Int32(1)})
	if err != nil {
		return fmt.Errorf("bench: create stream %s: %w", s.name, err)
	}
	s.arn = aws.ToString(out.StreamARN)
	put, err := c.DataEndpoint(ctx, s.name, types.APINamePutMedia)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	s.putURL = put + "/putMedia"
	if !r.cfg.NoConsumers {
		get, err := c.DataEndpoint(ctx, s.name, types.APINameGetMedia)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		s.getURL = get + "/getMedia"
	}
	return nil
}

// sign signs req with the client's credentials (SigV4, service kinesisvideo); hash is the hex
// SHA-256 of the payload, or of no bytes for a streaming PutMedia body, as the KVS producer does.
func (r *run) sign(ctx context.Context, req *http.Request, hash string) error {
	cfg := r.cfg.Client.AWSConfig()
	if cfg.Credentials == nil {
		return nil
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Content-Sha256", hash)
	return v4.NewSigner().SignHTTP(ctx, creds, req, hash, "kinesisvideo", cfg.Region, time.Now().UTC())
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// frameBytes is the size of a keyframe or a delta frame: a fragment of n frames (one keyframe)
// carries Bitrate × FragmentDuration bits.
func frameBytes(cfg Config, key bool) int {
	n := float64(framesPerFragment(cfg))
	fragment := float64(cfg.Bitrate) / 8 * cfg.FragmentDuration.Seconds()
	delta := fragment / (n - 1 + cfg.KeyframeRatio)
	if key {
		return max(16, int(delta*cfg.KeyframeRatio))
	}
	return max(16, int(delta))
}

func framesPerFragment(cfg Config) int {
	fps := cfg.FPS
	if fps <= 0 {
		fps = DefaultFPS
	}
	return max(1, int(cfg.FragmentDuration.Seconds()*float64(fps)+0.5))
}

// codecPrivate is a real avcC (from x264, 1920×1080, Constrained Baseline, level 4.1), so that
// players and parsers accept the stream's header.
var codecPrivate = []byte{
	0x01, 0x42, 0xc0, 0x29, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x42, 0xc0, 0x29, 0xda, 0x01, 0xe0, 0x08,
	0x9f, 0x97, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83,
	0x2a, 0x01, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80,
}

// connect opens the stream's PutMedia connection and sends the MKV header (EBML, Segment, Info,
// Tracks), so that the request reaches the server, and waits for its 200 response. Producers
// connect before the measured run starts, as cameras are connected before they stream: the
// latencies measure streaming, and the connection set-up is reported apart (Result.Connect).
func (s *stream) connect(ctx context.Context) error {
	r := s.r
	cfg := r.cfg
	t := time.Now()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.putURL, pr)
	if err != nil {
		return err
	}
	req.ContentLength = -1
	req.Header.Set("x-amzn-stream-name", s.name)
	req.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	req.Header.Set("x-amzn-producer-start-timestamp", strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64))
	req.Header.Set("x-amzn-fragment-acknowledgment-required", "1")
	if err := r.sign(ctx, req, emptyHash); err != nil {
		return err
	}
	s.pw = pw
	s.acksDone = make(chan struct{})
	status := make(chan error, 1)
	go func() {
		defer close(s.acksDone)
		resp, err := r.hc.Do(req)
		if err != nil {
			pr.CloseWithError(err)
			status <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			err := fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
			pr.CloseWithError(err)
			status <- err
			return
		}
		status <- nil
		s.readAcks(resp.Body)
		pr.Close() // the server is done: a write now fails instead of blocking
	}()
	interval := cfg.FragmentDuration / time.Duration(framesPerFragment(cfg))
	buf := mkv.AppendEBMLHeader(nil, "matroska")
	buf = mkv.AppendSegmentStart(buf)
	buf = mkv.AppendInfo(buf, mkv.DefaultTimecodeScale, "kvs bench")
	buf = mkv.AppendTracks(buf, []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC",
		CodecPrivate: codecPrivate, Width: 1920, Height: 1080, DefaultDuration: interval}})
	// The write returns once the transport has taken the bytes; the transport writes them with
	// the request's headers.
	if _, err := pw.Write(buf); err != nil {
		<-s.acksDone // the request ended: its status says why, when it failed
		if serr := <-status; serr != nil {
			return serr
		}
		return err
	}
	select {
	case err := <-status:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	s.connectTime = time.Since(t)
	return nil
}

// produce streams nFrags fragments on the connection that connect opened, starting at start.
func (s *stream) produce(ctx context.Context, start time.Time, nFrags int) {
	r := s.r
	defer close(s.done)
	pw, acksDone := s.pw, s.acksDone
	if d := time.Until(start); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			pw.Close()
			return
		}
	}
	cfg := r.cfg
	n := framesPerFragment(cfg)
	interval := cfg.FragmentDuration / time.Duration(n)
	keySize, deltaSize := frameBytes(cfg, true), frameBytes(cfg, false)
	buf := make([]byte, 0, keySize+256)
	offset := (s.index * 7919) % (1 << 20)
	var lag time.Duration
write:
	for f := range nFrags {
		fragStart := start.Add(time.Duration(f) * cfg.FragmentDuration)
		tc := fragStart.UnixMilli()
		rec := &fragRecord{}
		s.mu.Lock()
		s.frags[tc] = rec
		s.mu.Unlock()
		for k := range n {
			at := fragStart.Add(time.Duration(k) * interval)
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			} else if -d > lag {
				lag = -d
			}
			buf = buf[:0]
			if k == 0 {
				buf = mkv.AppendElementHeader(buf, mkv.IDCluster, -1)
				buf = mkv.AppendUint(buf, mkv.IDTimecode, uint64(tc))
			}
			size := deltaSize
			if k == 0 {
				size = keySize
			}
			rel := (time.Duration(k) * interval).Milliseconds()
			buf = appendSimpleBlock(buf, rel, k == 0, r.frameData[offset:offset+size])
			offset = (offset + size) % (1 << 20)
			if k == n-1 {
				buf = mkv.AppendTags(buf, mkv.SimpleTag{Name: mkv.TagEndOfFragment, Value: "1"})
			}
			if _, err := pw.Write(buf); err != nil {
				if ctx.Err() == nil {
					r.fail("put-media-write", err)
				}
				break write
			}
			rec.size += size
		}
		now := time.Now()
		s.mu.Lock()
		rec.lastByte = now
		s.sent++
		s.start, s.end = start, now
		s.mu.Unlock()
	}
	pw.Close()
	for {
		if old := r.maxLag.Load(); int64(lag) <= old || r.maxLag.CompareAndSwap(old, int64(lag)) {
			break
		}
	}
	select {
	case <-acksDone:
	case <-time.After(cfg.DrainTimeout):
		r.fail("put-media", errors.New("acks still open after the drain timeout"))
	}
}

// appendSimpleBlock appends a SimpleBlock on track 1 holding one AVCC NAL unit (4-byte length, an
// IDR or non-IDR slice header byte, then payload) of len(payload) bytes in all.
func appendSimpleBlock(b []byte, rel int64, key bool, payload []byte) []byte {
	b = mkv.AppendElementHeader(b, mkv.IDSimpleBlock, int64(4+len(payload)))
	flags := byte(0)
	if key {
		flags = 0x80
	}
	b = append(b, 0x81, byte(uint16(rel)>>8), byte(rel), flags)
	nal := len(payload) - 4
	b = append(b, byte(nal>>24), byte(nal>>16), byte(nal>>8), byte(nal))
	if key {
		b = append(b, 0x65)
	} else {
		b = append(b, 0x41)
	}
	return append(b, payload[5:]...)
}

type ack struct {
	EventType        string
	FragmentTimecode *int64
	FragmentNumber   string
	ErrorID          int `json:"ErrorId"`
	ErrorCode        string
}

func (s *stream) readAcks(body io.Reader) {
	dec := json.NewDecoder(body)
	for {
		var a ack
		if err := dec.Decode(&a); err != nil {
			if !errors.Is(err, io.EOF) {
				s.r.fail("put-media-acks", err)
			}
			return
		}
		now := time.Now()
		switch a.EventType {
		case "PERSISTED":
			if a.FragmentTimecode == nil {
				continue
			}
			s.mu.Lock()
			if rec := s.frags[*a.FragmentTimecode]; rec != nil {
				rec.persisted = now
			}
			s.mu.Unlock()
		case "ERROR":
			s.r.fail("put-media-error-ack", fmt.Errorf("stream %s: ERROR %d %s", s.name, a.ErrorID, a.ErrorCode))
		}
	}
}

func (s *stream) allDelivered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.frags {
		if !f.lastByte.IsZero() && f.delivered.IsZero() {
			return false
		}
	}
	return true
}

// consume runs one GetMedia NOW response until ctx ends; it reports on ready once the response
// has started (so that no fragment published after that is missed).
func (s *stream) consume(ctx context.Context, ready chan<- error) {
	r := s.r
	body := []byte(`{"StreamName":` + strconv.Quote(s.name) + `,"StartSelector":{"StartSelectorType":"NOW"}}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.getURL, bytes.NewReader(body))
	if err != nil {
		ready <- err
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if err := r.sign(ctx, req, sha256Hex(body)); err != nil {
		ready <- err
		return
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		ready <- fmt.Errorf("stream %s: status %d: %s", s.name, resp.StatusCode, bytes.TrimSpace(b))
		return
	}
	ready <- nil
	err = walkChunks(resp.Body, func(tc int64) {
		now := time.Now()
		s.mu.Lock()
		if rec := s.frags[tc]; rec != nil && rec.delivered.IsZero() {
			rec.delivered = now
		}
		s.mu.Unlock()
		select {
		case s.got <- struct{}{}:
		default:
		}
	})
	if err != nil && ctx.Err() == nil {
		r.fail("get-media", fmt.Errorf("stream %s: %w", s.name, err))
	}
}

var errChunk = errors.New("GetMedia error chunk")

// walkChunks reads a GetMedia response (concatenated MKV documents, one per fragment) and calls
// delivered with the cluster timecode once a chunk has been read through the Tags that follow its
// Cluster. It reads element headers only: frame bytes are discarded unparsed.
func walkChunks(r io.Reader, delivered func(tc int64)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var tags []byte
	haveCluster := false
	var tc int64
	for {
		id, size, _, err := mkv.ReadElementHeader(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch id {
		case mkv.IDSegment:
			continue // descend
		case mkv.IDEBML:
			haveCluster = false
		case mkv.IDCluster:
			if size < 0 {
				return errors.New("unknown-size cluster in a GetMedia chunk")
			}
			if tc, err = clusterTimecode(br, size); err != nil {
				return err
			}
			haveCluster = true
			continue
		case mkv.IDTags:
			if size < 0 || size > 1<<20 {
				return fmt.Errorf("tags of size %d", size)
			}
			tags = slices.Grow(tags[:0], int(size))[:size]
			if _, err := io.ReadFull(br, tags); err != nil {
				return err
			}
			if bytes.Contains(tags, []byte(mkv.TagErrorID)) {
				return errChunk
			}
			if haveCluster {
				haveCluster = false
				delivered(tc)
			}
			continue
		}
		if size < 0 {
			return fmt.Errorf("unknown-size element %#x", id)
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
	}
}

// clusterTimecode reads a known-size Cluster's children, returns its Timecode and leaves the
// reader after the Cluster.
func clusterTimecode(br *bufio.Reader, size int64) (int64, error) {
	var tc int64
	for size > 0 {
		id, n, hdr, err := mkv.ReadElementHeader(br)
		if err != nil {
			return 0, noEOF(err)
		}
		size -= int64(hdr)
		if n < 0 || n > size {
			return 0, errors.New("bad cluster child size")
		}
		if id == mkv.IDTimecode {
			var v uint64
			for range n {
				c, err := br.ReadByte()
				if err != nil {
					return 0, noEOF(err)
				}
				v = v<<8 | uint64(c)
			}
			tc = int64(v)
		} else if _, err := br.Discard(int(n)); err != nil {
			return 0, noEOF(err)
		}
		size -= n
	}
	return tc, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *run) result(streams []*stream) Result {
	res := Result{Streams: len(streams), ErrorsByKind: map[string]int{}}
	var acks, dels []float64
	secAcks, secDels := map[int][]float64{}, map[int][]float64{}
	second := func(f *fragRecord) int { return max(0, int(f.lastByte.Sub(r.t0)/time.Second)) }
	var active time.Duration
	measured := func(f *fragRecord) bool { return !f.lastByte.Before(r.t0.Add(r.cfg.Warmup)) }
	for _, s := range streams {
		s.mu.Lock()
		active += s.end.Sub(s.start)
		for _, f := range s.frags {
			if f.lastByte.IsZero() {
				continue
			}
			res.Sent++
			if f.persisted.IsZero() {
				res.ErrorsByKind["not-persisted"]++
			} else {
				res.Fragments++
				res.Bytes += int64(f.size)
				d := ms(f.persisted.Sub(f.lastByte))
				if measured(f) {
					acks = append(acks, d)
				}
				secAcks[second(f)] = append(secAcks[second(f)], d)
			}
			if r.cfg.NoConsumers {
				continue
			}
			if f.delivered.IsZero() {
				res.ErrorsByKind["not-delivered"]++
			} else {
				res.Delivered++
				d := ms(f.delivered.Sub(f.lastByte))
				if measured(f) {
					dels = append(dels, d)
				}
				secDels[second(f)] = append(secDels[second(f)], d)
			}
		}
		s.mu.Unlock()
	}
	r.errMu.Lock()
	for k, v := range r.errs {
		res.ErrorsByKind[k] += v
	}
	res.FirstErrors = r.first
	r.errMu.Unlock()
	for _, v := range res.ErrorsByKind {
		res.Errors += v
	}
	res.Duration = active / time.Duration(len(streams))
	var conns []float64
	for _, s := range streams {
		if s.connectTime > 0 {
			conns = append(conns, ms(s.connectTime))
		}
	}
	res.Connect = summarize(conns)
	for _, sec := range slices.Sorted(maps.Keys(secAcks)) {
		res.BySecond = append(res.BySecond, Second{Second: sec, Fragments: len(secAcks[sec]),
			PersistedP99: summarize(secAcks[sec]).P99, DeliveryP99: summarize(secDels[sec]).P99})
	}
	res.PersistedAck = summarize(acks)
	res.Delivery = summarize(dels)
	res.ProducerLag = time.Duration(r.maxLag.Load())
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize returns the nearest-rank p50, p99 and the maximum, rounded to 0.01 ms.
func summarize(v []float64) Latency {
	if len(v) == 0 {
		return Latency{}
	}
	slices.Sort(v)
	rank := func(p float64) float64 {
		i := int(p*float64(len(v))+0.999999) - 1
		return round2(v[min(max(i, 0), len(v)-1)])
	}
	return Latency{P50: rank(0.50), P99: rank(0.99), Max: round2(v[len(v)-1])}
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

// ParseBitrate parses "2Mbps", "500kbps", "2M", "1.5 Mbit/s" or a plain number of bits per second.
func ParseBitrate(s string) (int64, error) {
	orig := s
	s = strings.ToLower(strings.TrimSpace(s))
	for _, suf := range []string{"bit/s", "bps", "b/s", "b"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-len(suf)]
			break
		}
	}
	s = strings.TrimSpace(s)
	mult := 1.0
	if s != "" {
		switch s[len(s)-1] {
		case 'k':
			mult, s = 1e3, s[:len(s)-1]
		case 'm':
			mult, s = 1e6, s[:len(s)-1]
		case 'g':
			mult, s = 1e9, s[:len(s)-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bitrate %q: want e.g. 2Mbps, 500kbps or 2000000", orig)
	}
	return int64(v * mult), nil
}

// FormatBitrate prints bits per second as "2 Mbit/s", "500 kbit/s".
func FormatBitrate(bps int64) string {
	switch {
	case bps >= 1e6:
		return strconv.FormatFloat(float64(bps)/1e6, 'f', -1, 64) + " Mbit/s"
	case bps >= 1e3:
		return strconv.FormatFloat(float64(bps)/1e3, 'f', -1, 64) + " kbit/s"
	}
	return strconv.FormatInt(bps, 10) + " bit/s"
}
