// Package bench is the load generator behind `kvs bench`: N concurrent real-time PutMedia
// producers, each with one live GetMedia (NOW) consumer, measuring the PERSISTED ack latency and
// the live delivery latency of every fragment.
//
// The producer is a lean raw PutMedia sender, not client.Producer: it paces synthetic H.264-like
// frames in real time (one keyframe per fragment, about KeyframeRatio times a delta frame), writes
// each frame to the connection as it is "captured" inside an unknown-size Cluster, and ends each
// fragment with an AWS_KINESISVIDEO_END_OF_FRAGMENT Tags element, as the KVS producer SDK does.
// So the last byte of a fragment leaves the producer when its last frame is captured, and both
// latencies start there, when the write of that frame begins (taken after it returned, a consumer
// in the same process, which can have the chunk before the producer's goroutine runs again,
// measured delivery latencies below zero: -0.03 ms at p50 once):
//
//   - persisted ack latency: the fragment's last byte written to the connection → its PERSISTED ack
//     read from the response;
//   - delivery latency: the same instant → the consumer has read the whole GetMedia chunk
//     (through the trailing Tags that follow the Cluster).
//
// The consumer is a minimal EBML walker that reads only element headers, the Tags and the cluster
// timecode and discards the frame bytes, so that measuring costs little CPU next to the server
// under test; it still counts every frame byte against its chunk, and each chunk's fragment
// number tag and frame bytes must be those of the fragment with its timecode (from its acks and
// what was sent), else the run counts an error; so does a chunk whose timecode no fragment sent
// on its stream has, or a fragment's second chunk.
//
// The producers are paced by a few goroutines (shards), each writing the frames of its streams
// as they fall due on hand-written HTTP/1.1 requests, one writev per frame: what the generator
// spends is then mostly those write syscalls, as a camera's.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"golang.org/x/sync/errgroup"

	"github.com/openkvs/kvs/client"
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
	// Nodes, when set, are the nodes of a kvs cluster: stream i is put through Nodes[i%n] and
	// read through Nodes[(i+1)%n], another node than its writer's when there are several, so
	// that delivery crosses nodes. Empty: both go where GetDataEndpoint says.
	Nodes []string
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
	// Window, when set, is called with end false when the steady state starts (every producer
	// sending and Warmup past: max(Warmup, FragmentDuration) after the first producer starts)
	// and with end true when the last producer has sent its last fragment, before the wait for
	// its acks and the deliveries; not at all when the producers finish first. kvs bench samples the server's CPU
	// there: the set-up (creating streams, connecting) and the end (drain, deleting streams) stay
	// out of that figure.
	Window func(end bool)
}

// setDefaults gives the fields left zero (or negative) their defaults.
func (c *Config) setDefaults() {
	c.FPS = cmp.Or(max(c.FPS, 0), DefaultFPS)
	c.KeyframeRatio = cmp.Or(max(c.KeyframeRatio, 0), DefaultKeyframeRatio)
	c.DrainTimeout = cmp.Or(max(c.DrainTimeout, 0), DefaultDrainTimeout)
	c.StreamPrefix = cmp.Or(c.StreamPrefix, fmt.Sprintf("bench-%d", time.Now().Unix()))
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

// fragRecord is what one stream knows about one fragment; times are zero until they happen.
type fragRecord struct {
	size      int
	number    string // from its acks
	lastByte  time.Time
	persisted time.Time
	delivered time.Time
	// What the consumer found in the chunk with the fragment's timecode: its fragment number
	// tag and its frames' size, which must be the fragment's own.
	deliveredNumber string
	deliveredBytes  int
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

	conn        net.Conn      // the PutMedia request (connect)
	acksDone    chan struct{} // closed when the PutMedia response has been read
	connectTime time.Duration // request sent → 200 response (connect)
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
		TLSClientConfig:     cfg.Client.TLSConfig(), // AWS_CA_BUNDLE, as for the control plane
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
	starts := make([]time.Time, len(connected))
	for i := range connected {
		starts[i] = t0.Add(time.Duration(int64(cfg.FragmentDuration) * int64(i) / int64(len(connected))))
	}
	closeWindow := r.openWindow(t0.Add(max(cfg.Warmup, cfg.FragmentDuration)))
	// The window closes when the last fragment has been sent, before the wait for its acks.
	r.produceAll(runCtx, connected, starts, nFrags, closeWindow)
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

// openWindow calls cfg.Window(false) at start, unless the returned func is called first; that
// func calls cfg.Window(true) if the window was opened.
func (r *run) openWindow(start time.Time) (closeWindow func()) {
	if r.cfg.Window == nil {
		return func() {}
	}
	stop, opened := make(chan struct{}), make(chan bool, 1)
	go func() {
		t := time.NewTimer(time.Until(start))
		defer t.Stop()
		select {
		case <-t.C:
			r.cfg.Window(false)
			opened <- true
		case <-stop:
			opened <- false
		}
	}()
	return func() {
		close(stop)
		if <-opened {
			r.cfg.Window(true)
		}
	}
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
	if n := len(r.cfg.Nodes); n > 0 {
		s.putURL = r.cfg.Nodes[s.index%n] + "/putMedia"
		s.getURL = r.cfg.Nodes[(s.index+1)%n] + "/getMedia"
		return nil
	}
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
