package bench

// What a run measured, and how it is summarized.

import (
	"maps"
	"slices"
	"time"
)

// Latency summarizes latencies in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Result is the outcome of a run.
type Result struct {
	Streams int
	// Duration is the mean streaming time of the producers that sent a fragment: the first
	// frame's capture time → the last fragment's last byte (Config.Duration when every producer
	// kept real time). A producer that could not connect is an error, not a zero in the mean.
	Duration  time.Duration
	Fragments int   // fragments with a PERSISTED ack
	Bytes     int64 // media bytes (frames) of those fragments
	Sent      int   // fragments whose last byte was written
	Delivered int   // fragments a consumer received whole
	// Errors counts every failure: ERROR acks, failed connections, GetMedia error chunks,
	// fragments without a PERSISTED ack or (with consumers) not delivered by the end of the drain,
	// delivered chunks that are not the fragment's own, that no fragment sent has, or that
	// repeat a fragment already delivered.
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

func (r *run) result(streams []*stream) Result {
	res := Result{Streams: len(streams), ErrorsByKind: map[string]int{}}
	var acks, dels []float64
	secAcks, secDels := map[int][]float64{}, map[int][]float64{}
	second := func(f *fragRecord) int { return max(0, int(f.lastByte.Sub(r.t0)/time.Second)) }
	var active time.Duration
	streamed := 0 // producers that sent a fragment: one that could not connect streamed no time
	measured := func(f *fragRecord) bool { return !f.lastByte.Before(r.t0.Add(r.cfg.Warmup)) }
	for _, s := range streams {
		s.mu.Lock()
		if !s.end.IsZero() {
			active += s.end.Sub(s.start)
			streamed++
		}
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
				if f.deliveredNumber != f.number {
					res.ErrorsByKind["get-media-wrong-fragment-number"]++
				}
				if f.deliveredBytes != f.size {
					res.ErrorsByKind["get-media-wrong-size"]++
				}
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
	if streamed > 0 {
		res.Duration = active / time.Duration(streamed)
	}
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
