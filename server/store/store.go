package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	ErrStreamNotFound   = errors.New("store: stream not found")
	ErrStreamExists     = errors.New("store: stream already exists")
	ErrFragmentNotFound = errors.New("store: fragment not found")
	ErrClosed           = errors.New("store: closed")
)

// Stream is one stream's metadata as the control plane sees it.
type Stream struct {
	Name           string
	ARN            string
	DeviceName     string
	MediaType      string
	KmsKeyID       string
	Version        string
	Status         string // CREATING | ACTIVE | UPDATING | DELETING
	CreationTime   time.Time
	RetentionHours int
	Tags           map[string]string
}

// FragmentMeta describes one stored fragment. Number is the stream-local sequence assigned by the
// store on Append (1, 2, 3, ...; never reused, even after a restart or a retention purge); the
// server formats it as the KVS fragment-number string.
type FragmentMeta struct {
	Number       uint64
	ServerTime   time.Time     // when the server started receiving the fragment
	ProducerTime time.Time     // producer timestamp of the fragment start
	Duration     time.Duration // fragment length
	Size         int64         // stored record payload size in bytes
}

// TimeKind selects which timestamp a range lookup uses.
type TimeKind int

const (
	ServerTime TimeKind = iota
	ProducerTime
)

// Cursor continues a TimeRange after the fragment it names; the zero value starts at the beginning.
type Cursor struct {
	Time   time.Time
	Number uint64
}

// PayloadAppender is implemented by stores that can read a fragment's payload into a caller's
// buffer, with the same checks as Open but without a buffer of their own. AppendPayload appends
// the payload to b and returns the extended slice (b unchanged on error).
type PayloadAppender interface {
	AppendPayload(ctx context.Context, stream string, number uint64, b []byte) ([]byte, FragmentMeta, error)
}

// AsyncAppender is implemented by stores that can split Append in two: AppendAsync does the
// checks and the write and returns at once (with Append's errors for a fragment refused), and
// wait, called once, blocks until the fragment is durable and returns the error Append would
// have. Appends to one stream still come one at a time in number order, but the next may start
// before the previous one's wait returns.
type AsyncAppender interface {
	AppendAsync(ctx context.Context, stream string, meta FragmentMeta, data []byte) (wait func(context.Context) error, err error)
}

// Preparer is implemented by stores that can ready a stream for appends ahead of its first
// fragment (the PutMedia handler calls Prepare when an upload starts), so that the work a first
// append would otherwise do on the way to its PERSISTED ack (reserving fragment numbers, creating
// the segment file, fsyncing directory entries) happens while the fragment is still arriving.
// Prepare is an optimization: appends do the same work themselves when it was not done.
type Preparer interface {
	Prepare(ctx context.Context, stream string) error
}

// Store is safe for concurrent use.
type Store interface {
	// CreateStream registers s (Name must be set); ErrStreamExists when the name is taken.
	CreateStream(ctx context.Context, s Stream) error
	// GetStream returns a copy of the named stream; ErrStreamNotFound when absent.
	GetStream(ctx context.Context, name string) (Stream, error)
	// ListStreams returns every stream, sorted by name.
	ListStreams(ctx context.Context) ([]Stream, error)
	// UpdateStream applies fn to a copy of the stream and stores the result atomically.
	// If fn returns an error nothing changes and that error is returned.
	UpdateStream(ctx context.Context, name string, fn func(*Stream) error) (Stream, error)
	// DeleteStream removes the stream and all of its data.
	DeleteStream(ctx context.Context, name string) error

	// NextNumber reserves the next fragment number of the stream without storing anything. Numbers
	// reserved but never appended leave a gap; they are never handed out again (also across restarts).
	NextNumber(ctx context.Context, stream string) (uint64, error)
	// Append stores one fragment record (meta.Number from NextNumber, increasing per stream) and
	// returns only when the record and its index entry are durable (fsynced). data is not retained.
	// The stored Size is len(data). Errors: ErrNoRetention on a retention-0 stream, ErrNumberOrder
	// for a number not reserved or not above the previous append, ErrRecordTooLarge over
	// MaxRecordSize. Appends to one stream must come one at a time in number order; appends to
	// different streams may run concurrently (and share fsyncs in FS).
	Append(ctx context.Context, stream string, meta FragmentMeta, data []byte) error
	// Fragment returns the metadata of one fragment; ErrFragmentNotFound when absent or purged.
	Fragment(ctx context.Context, stream string, number uint64) (FragmentMeta, error)
	// Open returns the record payload of one fragment. The caller closes it.
	Open(ctx context.Context, stream string, number uint64) (io.ReadCloser, FragmentMeta, error)
	// Range returns up to limit fragments (limit <= 0: no limit) with Number >= from, in number order.
	Range(ctx context.Context, stream string, from uint64, limit int) ([]FragmentMeta, error)
	// TimeRange returns up to limit fragments (limit <= 0: no limit) whose kind timestamp is in
	// [start, end] (inclusive), ordered by (that timestamp, number), strictly after the cursor.
	TimeRange(ctx context.Context, stream string, kind TimeKind, start, end time.Time, after Cursor, limit int) ([]FragmentMeta, error)
	// First and Last return the oldest and newest stored fragment; ErrFragmentNotFound when empty.
	First(ctx context.Context, stream string) (FragmentMeta, error)
	Last(ctx context.Context, stream string) (FragmentMeta, error)
	// EnforceRetention deletes fragments older than each stream's retention (whole segments in the
	// FS store) as of now and returns how many fragments went.
	EnforceRetention(ctx context.Context, now time.Time) (int, error)
	Close() error
}
