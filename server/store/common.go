package store

import (
	"errors"
	"maps"
	"math"
	"time"
)

// More sentinel errors, matched with errors.Is.
var (
	// ErrNoRetention is returned by AppendAsync on a stream whose RetentionHours is 0: such streams
	// keep nothing in the store (the server holds their fragments only in its live buffer).
	ErrNoRetention = errors.New("store: stream has no data retention")
	// ErrNumberOrder is returned by AppendAsync when meta.Number was not reserved with NextNumber
	// or is not greater than the stream's previous appended number.
	ErrNumberOrder = errors.New("store: fragment number not reserved or not increasing")
	// ErrRecordTooLarge is returned by AppendAsync for a record over MaxRecordSize.
	ErrRecordTooLarge = errors.New("store: record too large")
	// ErrCorrupt reports a stored record whose checksum or header does not match (from Open, its
	// reader, or AppendPayload).
	ErrCorrupt = errors.New("store: record corrupt")
	// ErrUnavailable reports that a backend the store depends on (a database, an object store)
	// did not answer in time. Nothing is known to be stored; trying again later may succeed. The
	// server answers it with ERROR 5000, which producers retry.
	ErrUnavailable = errors.New("store: backend unavailable")
	// ErrNotOwner reports that another writer holds the stream in a store shared by several
	// server nodes: its lease moved, and this node's appends are refused (fenced).
	ErrNotOwner = errors.New("store: another node writes this stream")
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
