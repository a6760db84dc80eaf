package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkLiveStreams is kvs bench's live load on the store alone: N streams each append a
// 256 KiB record (2 Mbit/s in 1 s fragments) once a second, started spread over the first
// second, for b.N seconds; one op is one second of the load. It reports the durable-append
// latency (AppendAsync to its wait's return: the PERSISTED ack's wait) at p50, p99 and max, and
// how many streams fell a fragment behind (a fragment due before the previous one was durable:
// the store could not keep up). Run with -benchtime 20x; the disk's own figures are
// BenchmarkDiskFdatasync's.
func BenchmarkLiveStreams(b *testing.B) {
	for _, streams := range []int{200, 1000} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			s, data := benchStreams(b, streams)
			ctx := context.Background()
			var mu sync.Mutex
			var lat []time.Duration
			behind := 0
			b.SetBytes(int64(streams) * benchRecord)
			b.ResetTimer()
			t0 := time.Now()
			var wg sync.WaitGroup
			for i := range streams {
				name := fmt.Sprintf("s%d", i)
				start := t0.Add(time.Duration(i) * time.Second / time.Duration(streams))
				wg.Go(func() {
					var waits sync.WaitGroup
					var prevDone chan struct{}
					late := false
					for k := range b.N {
						time.Sleep(time.Until(start.Add(time.Duration(k) * time.Second)))
						if prevDone != nil {
							select {
							case <-prevDone:
							default:
								late = true
							}
						}
						n, err := s.NextNumber(ctx, name)
						if err != nil {
							b.Error(err)
							return
						}
						sent := time.Now()
						wait, err := s.AppendAsync(ctx, name, FragmentMeta{Number: n, ServerTime: sent, ProducerTime: sent}, data)
						if err != nil {
							b.Error(err)
							return
						}
						done := make(chan struct{})
						prevDone = done
						waits.Go(func() {
							defer close(done)
							if err := wait(ctx); err != nil {
								b.Error(err)
							}
							d := time.Since(sent)
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
						})
					}
					waits.Wait()
					if late {
						mu.Lock()
						behind++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(float64(behind), "streams-behind")
			if n := s.statBatches.Load(); n > 0 {
				b.ReportMetric(float64(s.statAppends.Load())/float64(n), "appends/batch")
			}
		})
	}
}
