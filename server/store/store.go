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
	// ErrVersionMismatch is returned by DeleteStream when the stream's Version is not the one
	// the caller named.
	ErrVersionMismatch = errors.New("store: stream version does not match")
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

// FragmentMeta describes one stored fragment. Number is the stream-local sequence handed out by
// NextNumber (1, 2, 3, ...; never reused under the stream's name, even after a restart, a
// retention purge or the stream's deletion); the
// server formats it as the KVS fragment-number string.
type FragmentMeta struct {
	Number       uint64
	ServerTime   time.Time     // when the server started receiving the fragment
	ProducerTime time.Time     // producer timestamp of the fragment start
	Duration     time.Duration // fragment length
	Size         int64         // stored record payload size in bytes
	// Checksum, on an append, is the CRC-32C (Castagnoli) of the data when the caller has it (the
	// server checksums each frame while it is in the CPU cache, then combines them): the store
	// keeps it instead of reading the data once more. 0: the store computes it. A store that
	// keeps no checksum (Mem) verifies a given one, so tests catch a wrong one. Reads return 0.
	Checksum uint32
}

// TimeKind selects which timestamp a range lookup uses.
type TimeKind int

const (
	ServerTime TimeKind = iota
	ProducerTime
)

// Time returns m's timestamp of kind: ProducerTime, else ServerTime.
func (m FragmentMeta) Time(kind TimeKind) time.Time {
	if kind == ProducerTime {
		return m.ProducerTime
	}
	return m.ServerTime
}

// Cursor continues a TimeRange after the fragment it names; the zero value starts at the beginning.
type Cursor struct {
	Time   time.Time
	Number uint64
}

// Stats is how much a store holds, for metrics and quotas.
type Stats struct {
	Streams   int   // streams in the registry
	Fragments int64 // fragments readable now (as Range lists them, across every stream)
	// Bytes is what the stored data takes in the backend, at least the payload bytes of those
	// fragments: FS counts its segment files (records in flight included) and its index file;
	// Mem and a cluster count the payloads (a cluster's objects may hold more until its cleanup
	// deletes them).
	Bytes int64
}

// Store keeps the stream registry and each stream's fragments. doc.go states the contract in
// full (durability, numbering, ordering, retention, errors); storetest.Run checks it. A Store is
// safe for concurrent use.
type Store interface {
	// CreateStream registers s (Name must be set); ErrStreamExists when the name is taken.
	CreateStream(ctx context.Context, s Stream) error
	// GetStream returns a copy of the named stream; ErrStreamNotFound when absent.
	GetStream(ctx context.Context, name string) (Stream, error)
	// ListStreams returns every stream, sorted by name.
	ListStreams(ctx context.Context) ([]Stream, error)
	// UpdateStream applies fn to a copy of the stream and stores the result atomically: no other
	// change to the stream comes between what fn saw and what is stored. If fn returns an error
	// nothing changes and that error is returned; fn may not rename the stream.
	UpdateStream(ctx context.Context, name string, fn func(*Stream) error) (Stream, error)
	// DeleteStream removes the stream and all of its data, atomically checking that its Version
	// is version first (ErrVersionMismatch when not; "" deletes whatever version it has).
	// Appends in flight on the stream fail with ErrStreamNotFound.
	DeleteStream(ctx context.Context, name, version string) error

	// Prepare readies the stream for appends ahead of its first fragment (the PutMedia handler
	// calls it when an upload starts), doing early what the first append would otherwise do on
	// its way to durable: reserving numbers, opening files, taking write ownership. It changes
	// nothing readers see, may be called any number of times and may do nothing at all.
	Prepare(ctx context.Context, stream string) error
	// NextNumber reserves the next fragment number of the stream without storing anything. Numbers
	// reserved but never appended leave a gap; they are never handed out again (also across
	// restarts and owners), under the stream's name: a stream deleted and created again under it
	// starts after every number the one before could have handed out, so a continuation token or
	// fragment number a client kept from that one names no fragment of the new one.
	NextNumber(ctx context.Context, stream string) (uint64, error)
	// AppendAsync starts storing one fragment record (meta.Number from NextNumber, above the
	// stream's previous append; meta.Size is ignored, the stored Size is len(data)) and returns
	// as soon as the record is written and queued for durability; data is not retained. It
	// refuses a fragment with ErrNoRetention (retention-0 stream), ErrNumberOrder,
	// ErrRecordTooLarge or ErrStreamNotFound, storing nothing. wait, called at most once, blocks
	// until the record and its index entry are durable (nil) or failed; if its ctx ends first it
	// returns ctx.Err() and the fragment may or may not be stored. Appends to one stream come one
	// at a time in number order, but the next may start before the previous one's wait returns;
	// appends to different streams may run concurrently. See Append for the one-call form.
	AppendAsync(ctx context.Context, stream string, meta FragmentMeta, data []byte) (wait func(context.Context) error, err error)

	// Fragment returns the metadata of one fragment; ErrFragmentNotFound when absent or purged.
	Fragment(ctx context.Context, stream string, number uint64) (FragmentMeta, error)
	// Open returns the record payload of one fragment, checked (ErrCorrupt instead of bytes that
	// fail the store's checksum) before Open returns, so that a caller can decide its answer
	// before its first byte. The caller closes it. The reader stays valid if the fragment is
	// purged or its stream deleted meanwhile. FS's reader is a section of its segment file, which
	// io.Copy to a connection of server.Listener sends with sendfile(2).
	Open(ctx context.Context, stream string, number uint64) (io.ReadCloser, FragmentMeta, error)
	// AppendPayload appends one fragment's payload to b and returns the extended slice: the same
	// bytes and checks as Open, without a buffer of the store's own. On error b is returned
	// unchanged (same length; bytes past it may have been written).
	AppendPayload(ctx context.Context, stream string, number uint64, b []byte) ([]byte, FragmentMeta, error)
	// Range returns up to limit fragments (limit <= 0: no limit) with Number >= from, in number order.
	Range(ctx context.Context, stream string, from uint64, limit int) ([]FragmentMeta, error)
	// TimeRange returns up to limit fragments (limit <= 0: no limit) whose kind timestamp is in
	// [start, end] (inclusive), ordered by (that timestamp, number), strictly after the cursor.
	TimeRange(ctx context.Context, stream string, kind TimeKind, start, end time.Time, after Cursor, limit int) ([]FragmentMeta, error)
	// First and Last return the oldest and newest stored fragment; ErrFragmentNotFound when empty.
	First(ctx context.Context, stream string) (FragmentMeta, error)
	Last(ctx context.Context, stream string) (FragmentMeta, error)

	// Ready reports whether the store can take appends now: nil, or an error that says what is
	// wrong and what to look at (FS: the data directory cannot be written, e.g. a read-only or
	// full filesystem; a cluster: PostgreSQL or the object store does not answer). It does the
	// work of a real check each time (FS writes and syncs a probe file), so callers (GET /readyz)
	// call it when asked, not in a loop. ErrClosed after Close.
	Ready(ctx context.Context) error
	// Stats returns how much the store holds now. See Stats.
	Stats(ctx context.Context) (Stats, error)

	// EnforceRetention deletes fragments whose server time is before now minus their stream's
	// retention (possibly later, never earlier: FS deletes whole segments) and returns how many
	// went. The store runs it on no schedule of its own; the server does.
	EnforceRetention(ctx context.Context, now time.Time) (int, error)
	// Close waits for appends in flight and releases the store; every later call returns
	// ErrClosed, except Close, which returns nil.
	Close() error
}

// Append stores one fragment and returns once it is durable: AppendAsync, then its wait. If ctx
// ends while waiting, Append returns ctx.Err() and the fragment may or may not be stored.
func Append(ctx context.Context, s Store, stream string, meta FragmentMeta, data []byte) error {
	wait, err := s.AppendAsync(ctx, stream, meta, data)
	if err != nil {
		return err
	}
	return wait(ctx)
}
