package bench

// The producers: one raw PutMedia connection per stream, fed synthetic frames in real time.

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/mkv"
)

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
//
// The request goes out on a connection of its own, written by hand (HTTP/1.1, chunked): one
// write syscall per frame, from the shard that paces it (pace), with no pipe or transport
// goroutine in between.
func (s *stream) connect(ctx context.Context) error {
	r := s.r
	cfg := r.cfg
	t := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.putURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-amzn-stream-name", s.name)
	req.Header.Set("x-amzn-fragment-timecode-type", "ABSOLUTE")
	req.Header.Set("x-amzn-producer-start-timestamp", strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64))
	req.Header.Set("x-amzn-fragment-acknowledgment-required", "1")
	if err := r.cfg.Client.Sign(ctx, req, nil); err != nil {
		return err
	}
	conn, err := dial(ctx, req.URL, s.r.cfg.Client.TLSConfig())
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kvs-bench\r\nTransfer-Encoding: chunked\r\n", req.URL.RequestURI(), req.URL.Host)
	if err := req.Header.Write(&head); err != nil {
		conn.Close()
		return err
	}
	head.WriteString("\r\n")
	interval := cfg.FragmentDuration / time.Duration(framesPerFragment(cfg))
	mkvHead := mkv.AppendEBMLHeader(nil, "matroska")
	mkvHead = mkv.AppendSegmentStart(mkvHead)
	mkvHead = mkv.AppendInfo(mkvHead, mkv.DefaultTimecodeScale, "kvs bench")
	mkvHead = mkv.AppendTracks(mkvHead, []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC",
		CodecPrivate: codecPrivate, Width: 1920, Height: 1080, DefaultDuration: interval}})
	fmt.Fprintf(&head, "%x\r\n%s\r\n", len(mkvHead), mkvHead)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(head.Bytes()); err != nil {
		conn.Close()
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), req)
	if err != nil {
		conn.Close()
		return err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	_ = conn.SetDeadline(time.Time{})
	s.conn = conn
	s.acksDone = make(chan struct{})
	go func() {
		defer close(s.acksDone)
		defer stop()
		defer conn.Close()
		s.readAcks(resp.Body)
	}()
	s.connectTime = time.Since(t)
	return nil
}

// dial opens a TCP (or, for https, TLS with tc's roots, nil: the system's) connection to u's host.
func dial(ctx context.Context, u *url.URL, tc *tls.Config) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[bool]string{true: "443", false: "80"}[u.Scheme == "https"])
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if u.Scheme == "https" {
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tc = tc.Clone()
		tc.ServerName = u.Hostname()
		td := &tls.Dialer{NetDialer: d, Config: tc}
		return td.DialContext(ctx, "tcp", host)
	}
	return d.DialContext(ctx, "tcp", host)
}

// producer is one stream's position in its shard's schedule.
type producer struct {
	s      *stream
	start  time.Time // the first frame's capture time
	frag   int       // the fragment being sent
	frame  int       // the next frame of it
	offset int       // into run.frameData
	rec    *fragRecord
	due    time.Time // the next frame's capture time
	lag    time.Duration
	hdr    []byte // chunk header and element headers of one write
	tail   []byte // trailing Tags and the chunk's CRLF
}

// shards is how many goroutines pace the producers: each writes the frames of its streams as
// they fall due, so a frame costs one write syscall and no goroutine wake-up of its own. A write
// that blocks (the server does not read) delays the shard's other streams, which shows as
// producer lag.
const shards = 8

// produceAll streams nFrags fragments on every connected stream, stream i starting at starts[i],
// calls sent once every producer has written its last fragment (or failed), and returns when
// every producer has ended (its body closed and its acks read, or the drain timeout passed).
func (r *run) produceAll(ctx context.Context, streams []*stream, starts []time.Time, nFrags int, sent func()) {
	n := min(shards, len(streams))
	ended := make([][]*producer, n)
	var wg sync.WaitGroup
	for k := range n {
		var ps []*producer
		for i := k; i < len(streams); i += shards {
			ps = append(ps, &producer{s: streams[i], start: starts[i], due: starts[i],
				offset: (streams[i].index * 7919) % (1 << 20)})
		}
		wg.Go(func() { ended[k] = r.pace(ctx, ps, nFrags) })
	}
	wg.Wait()
	sent()
	for _, ps := range ended {
		wg.Go(func() { r.awaitAcks(ps) })
	}
	wg.Wait()
}

// earlyWrite is how far ahead of its capture time a frame may be written, so that a shard
// writes the frames due at about the same time in one wake-up.
const earlyWrite = time.Millisecond

// pace writes the frames of ps in capture-time order, ends each upload and returns the producers.
func (r *run) pace(ctx context.Context, ps []*producer, nFrags int) (ended []*producer) {
	h := prodHeap(ps)
	heap.Init(&h)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for h.Len() > 0 {
		p := h[0]
		if d := time.Until(p.due); d > earlyWrite {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				for _, p := range h {
					p.s.conn.Close() // its acks end
					ended = append(ended, p)
				}
				h = nil
				continue
			}
		} else if -d > p.lag {
			p.lag = -d
		}
		if !r.writeFrame(ctx, p) || p.frag == nFrags {
			heap.Pop(&h)
			ended = append(ended, p)
			r.endUpload(p)
			continue
		}
		heap.Fix(&h, 0)
	}
	return ended
}

// awaitAcks waits for the acks of a shard's ended uploads and then marks each producer done.
func (r *run) awaitAcks(ended []*producer) {
	// One drain timeout for the whole shard, not one per upload: with the server not acking,
	// a shard of 125 uploads would otherwise wait 125 timeouts.
	drain := time.NewTimer(r.cfg.DrainTimeout)
	defer drain.Stop()
	expired := false
	for _, p := range ended {
		if !expired {
			select {
			case <-p.s.acksDone:
			case <-drain.C:
				expired = true
			}
		}
		if expired {
			select {
			case <-p.s.acksDone:
			default:
				r.fail("put-media", errors.New("acks still open after the drain timeout"))
				p.s.conn.Close()
			}
		}
		close(p.s.done)
	}
}

// writeFrame writes p's next frame as one HTTP chunk (one writev) and advances p; false when
// the write failed.
func (r *run) writeFrame(ctx context.Context, p *producer) bool {
	cfg := r.cfg
	s := p.s
	n := framesPerFragment(cfg)
	interval := cfg.FragmentDuration / time.Duration(n)
	fragStart := p.start.Add(time.Duration(p.frag) * cfg.FragmentDuration)
	tc := fragStart.UnixMilli()
	k := p.frame
	if k == 0 {
		p.rec = &fragRecord{}
		s.mu.Lock()
		s.frags[tc] = p.rec
		s.mu.Unlock()
	}
	size := frameBytes(cfg, k == 0)
	payload := r.frameData[p.offset : p.offset+size]
	p.offset = (p.offset + size) % (1 << 20)
	var el [64]byte
	b := el[:0]
	if k == 0 {
		b = mkv.AppendElementHeader(b, mkv.IDCluster, -1)
		b = mkv.AppendUint(b, mkv.IDTimecode, uint64(tc))
	}
	b = appendBlockHeader(b, (time.Duration(k) * interval).Milliseconds(), k == 0, len(payload))
	p.tail = p.tail[:0]
	if k == n-1 {
		p.tail = mkv.AppendTags(p.tail, mkv.SimpleTag{Name: mkv.TagEndOfFragment, Value: "1"})
	}
	chunk := len(b) + len(payload) - blockPrefix + len(p.tail)
	p.hdr = append(strconv.AppendInt(p.hdr[:0], int64(chunk), 16), '\r', '\n')
	p.hdr = append(p.hdr, b...)
	p.tail = append(p.tail, '\r', '\n')
	bufs := net.Buffers{p.hdr, payload[blockPrefix:], p.tail}
	var handed time.Time // the fragment's last byte goes to the connection (bench.go)
	if k == n-1 {
		handed = time.Now()
	}
	if _, err := bufs.WriteTo(s.conn); err != nil {
		if ctx.Err() == nil {
			r.fail("put-media-write", err)
		}
		return false
	}
	p.rec.size += size
	p.frame++
	p.due = fragStart.Add(time.Duration(p.frame) * interval)
	if p.frame == n {
		now := time.Now()
		s.mu.Lock()
		p.rec.lastByte = handed
		s.sent++
		s.start, s.end = p.start, now
		s.mu.Unlock()
		p.frag++
		p.frame = 0
		p.due = p.start.Add(time.Duration(p.frag) * cfg.FragmentDuration)
	}
	return true
}

// endUpload sends the body's last chunk and records the producer's lag.
func (r *run) endUpload(p *producer) {
	_, _ = io.WriteString(p.s.conn, "0\r\n\r\n")
	for {
		if old := r.maxLag.Load(); int64(p.lag) <= old || r.maxLag.CompareAndSwap(old, int64(p.lag)) {
			break
		}
	}
}

// prodHeap orders producers by their next frame's capture time.
type prodHeap []*producer

func (h prodHeap) Len() int           { return len(h) }
func (h prodHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h prodHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *prodHeap) Push(x any)        { *h = append(*h, x.(*producer)) }
func (h *prodHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}

// blockPrefix is the part of a frame's payload that appendBlockHeader writes itself: the AVCC
// NAL unit's 4-byte length and its header byte.
const blockPrefix = 5

// appendBlockHeader appends the head of a SimpleBlock on track 1 holding one AVCC NAL unit of
// size bytes in all (4-byte length, an IDR or non-IDR slice header byte, then payload): the
// element header, the block header and the first blockPrefix bytes of the NAL unit. The rest of
// the NAL unit (size-blockPrefix bytes) follows.
func appendBlockHeader(b []byte, rel int64, key bool, size int) []byte {
	b = mkv.AppendElementHeader(b, mkv.IDSimpleBlock, int64(4+size))
	flags := byte(0)
	if key {
		flags = 0x80
	}
	b = append(b, 0x81, byte(uint16(rel)>>8), byte(rel), flags)
	nal := size - 4
	b = append(b, byte(nal>>24), byte(nal>>16), byte(nal>>8), byte(nal))
	if key {
		return append(b, 0x65)
	}
	return append(b, 0x41)
}

// readAcks records the PERSISTED acks of the stream's PutMedia response and counts its ERROR acks.
func (s *stream) readAcks(body io.Reader) {
	err := client.ReadAcks(body, func(a client.Ack) error {
		now := time.Now()
		switch a.EventType {
		case client.AckBuffering, client.AckPersisted:
			s.mu.Lock()
			if rec := s.frags[a.FragmentTimecode]; rec != nil {
				if a.EventType == client.AckPersisted {
					rec.persisted = now
				}
				if rec.number == "" {
					rec.number = a.FragmentNumber
				}
			}
			s.mu.Unlock()
		case client.AckError:
			s.r.fail("put-media-error-ack", fmt.Errorf("stream %s: ERROR %d %s", s.name, a.ErrorID, a.ErrorCode))
		}
		return nil
	})
	if err != nil {
		s.r.fail("put-media-acks", err)
	}
}
