package server

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// benchTracks is one 1080p H.264 track (the CodecPrivate's contents do not matter to the server).
var benchTracks = []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC",
	CodecPrivate: make([]byte, 40), Width: 1920, Height: 1080}}

// benchFragment returns the frames of one synthetic 1 s, 30 fps, 2 Mbit/s fragment (250 kB: a
// 57.7 kB keyframe and 29 delta frames of 6.4 kB) with timecodes from tc (ms).
func benchFragment(frames []mkv.Frame, data []byte, tc int64) []mkv.Frame {
	const key, delta = 57_692, 6_410
	frames = frames[:0]
	off := 0
	for k := range 30 {
		size := delta
		if k == 0 {
			size = key
		}
		frames = append(frames, mkv.Frame{Track: 1, Timecode: tc + int64(k)*33, Keyframe: k == 0, Data: data[off : off+size]})
		off += size
	}
	return frames
}

func benchHeader() []byte {
	b := mkv.AppendEBMLHeader(nil, "matroska")
	b = mkv.AppendSegmentStart(b)
	b = mkv.AppendInfo(b, mkv.DefaultTimecodeScale, "bench")
	return mkv.AppendTracks(b, benchTracks)
}

// BenchmarkPutMedia streams b.N fragments (250 kB, 30 frames each) through one PutMedia
// connection over loopback and waits for every PERSISTED ack: parse, chunk building, store append
// (fdatasync with fs), publish and acks. allocs/op are per fragment, so a per-frame allocation
// shows as 30 or more. Run:
//
//	go test -run '^$' -bench PutMedia -benchmem ./server/
func BenchmarkPutMedia(b *testing.B) {
	for _, kind := range []string{"mem", "fs"} {
		b.Run(kind, func(b *testing.B) {
			e := newMediaEnv(b, kind)
			e.createStream(b, "bench", 24)
			pc := e.startPut(b, "bench")
			if pc.status != 200 {
				b.Fatalf("put media: %d", pc.status)
			}
			pc.write(benchHeader())
			data := make([]byte, 300_000)
			var frames []mkv.Frame
			var buf []byte
			acked := make(chan int, 1)
			go func() {
				n := 0
				for ev := range pc.acks {
					switch ev.EventType {
					case ackPersisted:
						n++
					case ackError:
						b.Errorf("ERROR ack %+v", ev)
					}
				}
				acked <- n
			}()
			b.SetBytes(250_000)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tc := int64(baseMillis) + int64(i)*1000
				frames = benchFragment(frames, data, tc)
				var err error
				if buf, err = mkv.AppendCluster(buf[:0], tc, frames); err != nil {
					b.Fatal(err)
				}
				pc.write(buf)
			}
			pc.pw.Close()
			if n := <-acked; n != b.N {
				b.Fatalf("%d PERSISTED acks, want %d", n, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frags/s")
		})
	}
}

// BenchmarkGetMediaFanout puts one fragment per op into a stream (mem store) followed live by N
// GetMedia NOW consumers, and waits until the server has written it to all of them. The
// consumers only drain their connection; "from-store" counts chunks that were read back from the
// store instead of the live buffer (want 0). Run:
//
//	go test -run '^$' -bench GetMediaFanout -benchmem ./server/
func BenchmarkGetMediaFanout(b *testing.B) {
	for _, consumers := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			e := newMediaEnv(b, "mem")
			var mu sync.Mutex
			delivered := map[uint64]int{}
			fromStore := 0
			wake := make(chan struct{}, 1)
			e.srv.media.testDeliver = func(n uint64, store bool) {
				mu.Lock()
				delivered[n]++
				if store {
					fromStore++
				}
				mu.Unlock()
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			e.createStream(b, "fan", 24)
			ctx, cancel := context.WithCancel(b.Context())
			var wg sync.WaitGroup
			for range consumers {
				body := e.getMedia(b, ctx, "fan", map[string]any{"StartSelectorType": "NOW"}, true)
				wg.Go(func() {
					defer body.Close()
					_, _ = io.Copy(io.Discard, body)
				})
			}
			pc := e.startPut(b, "fan")
			pc.write(benchHeader())
			go func() {
				for range pc.acks { //nolint:revive // drain
				}
			}()
			data := make([]byte, 300_000)
			var frames []mkv.Frame
			var buf []byte
			b.SetBytes(250_000 * int64(consumers))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tc := int64(baseMillis) + int64(i)*1000
				frames = benchFragment(frames, data, tc)
				var err error
				if buf, err = mkv.AppendCluster(buf[:0], tc, frames); err != nil {
					b.Fatal(err)
				}
				pc.write(buf)
				// Fragment numbers are 1, 2, ... on a fresh stream.
				deadline := time.After(10 * time.Second)
				for {
					mu.Lock()
					got := delivered[uint64(i+1)]
					mu.Unlock()
					if got == consumers {
						break
					}
					select {
					case <-wake:
					case <-deadline:
						b.Fatalf("fragment %d reached %d of %d consumers", i+1, got, consumers)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(fromStore), "from-store")
			pc.pw.Close()
			cancel()
			wg.Wait()
		})
	}
}
