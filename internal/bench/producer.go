package bench

// The producers: one raw PutMedia connection per stream, fed synthetic frames in real time.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	if err := r.cfg.Client.Sign(ctx, req, nil); err != nil {
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

// readAcks records the PERSISTED acks of the stream's PutMedia response and counts its ERROR acks.
func (s *stream) readAcks(body io.Reader) {
	err := client.ReadAcks(body, func(a client.Ack) error {
		now := time.Now()
		switch a.EventType {
		case client.AckPersisted:
			s.mu.Lock()
			if rec := s.frags[a.FragmentTimecode]; rec != nil {
				rec.persisted = now
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
