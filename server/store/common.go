package store

import (
	"errors"
	"maps"
	"math"
	"sort"
	"time"
)

// MaxRecordSize is the largest record payload AppendAsync accepts, in bytes. KVS caps a fragment at
// 50 MiB; the margin leaves room for the metadata the server stores with it.
const MaxRecordSize = 64 << 20

// Timestamps are stored as int64 Unix nanoseconds. The zero time.Time maps to math.MinInt64 (and
// back), so an unknown timestamp sorts first, as time.Time{} does; times outside the int64
// nanosecond range (years 1678..2262) are clamped. Both stores return times in UTC with
// nanosecond precision and no monotonic reading, so their results compare equal.
const zeroTimeNanos = math.MinInt64

var (
	minNanosTime = time.Unix(0, math.MinInt64+1)
	maxNanosTime = time.Unix(0, math.MaxInt64)
)

func timeToNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return zeroTimeNanos
	case t.Before(minNanosTime):
		return math.MinInt64 + 1
	case t.After(maxNanosTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func nanosToTime(n int64) time.Time {
	if n == zeroTimeNanos {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// UnixNanos is how stores keep a timestamp: Unix nanoseconds, the zero time as math.MinInt64,
// times beyond the int64 range clamped. FromUnixNanos reverses it (UTC, no monotonic reading).
// A backend that keeps times this way returns them as Mem and FS do.
func UnixNanos(t time.Time) int64 { return timeToNanos(t) }

// FromUnixNanos is the inverse of UnixNanos.
func FromUnixNanos(n int64) time.Time { return nanosToTime(n) }

// normTime gives t the precision and location the stores return.
func normTime(t time.Time) time.Time { return nanosToTime(timeToNanos(t)) }

// normMeta returns meta as stored: times normalized, Size from the record length.
func normMeta(meta FragmentMeta, size int) FragmentMeta {
	meta.ServerTime = normTime(meta.ServerTime)
	meta.ProducerTime = normTime(meta.ProducerTime)
	meta.Size = int64(size)
	meta.Checksum = 0 // reads return 0
	return meta
}

func copyStream(s Stream) Stream {
	if s.Tags != nil {
		s.Tags = maps.Clone(s.Tags)
	}
	return s
}

// sortedStreams returns copies of the Stream info of every stream, sorted by name: ListStreams.
func sortedStreams[S any](streams map[string]S, info func(S) Stream) []Stream {
	out := make([]Stream, 0, len(streams))
	for _, s := range streams {
		out = append(out, copyStream(info(s)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var errRename = errors.New("store: update stream: the name cannot change")

// updatedStream runs UpdateStream's fn on a copy of cur, the stream called name, and returns that
// copy as fn left it; renaming is refused.
func updatedStream(cur Stream, name string, fn func(*Stream) error) (Stream, error) {
	c := copyStream(cur)
	if err := fn(&c); err != nil {
		return Stream{}, err
	}
	if c.Name != name {
		return Stream{}, errRename
	}
	return c, nil
}

// timeKey is the (timestamp, number) order TimeRange uses.
type timeKey struct {
	nanos  int64
	number uint64
}

func (a timeKey) less(b timeKey) bool {
	if a.nanos != b.nanos {
		return a.nanos < b.nanos
	}
	return a.number < b.number
}

func metaTimeKey(m FragmentMeta, kind TimeKind) timeKey {
	return timeKey{timeToNanos(m.Time(kind)), m.Number}
}

func validKind(kind TimeKind) bool { return kind == ServerTime || kind == ProducerTime }

var errBadKind = errors.New("store: unknown time kind")

// retentionCutoff is the server time before which a stream's fragments expire as of now.
func retentionCutoff(now time.Time, hours int) time.Time {
	return now.Add(-time.Duration(hours) * time.Hour)
}
