package store

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/openkvs/kvs/internal/record"
)

// Mem is an in-memory Store: the reference implementation for the behaviour suite and for tests
// of other packages. Nothing survives Close, so it cannot be reopened. It follows the FS store's
// rules exactly (retention-0 streams reject appends, numbers must be reserved and increasing,
// times are normalized) except that retention and a stream's kvs:max-bytes cap remove individual
// fragments rather than whole segments, and that an append is readable (and as durable as it will get) when AppendAsync
// returns.
//
// Mem is safe for concurrent use. The zero value is not usable; call NewMem.
type Mem struct {
	mu      sync.RWMutex
	closed  bool
	streams map[string]*memStream
	retired map[string]uint64 // name of a deleted stream → the next number it would have handed out
}

type memStream struct {
	info  Stream
	next  uint64 // next number NextNumber hands out
	last  uint64 // last appended number
	frags []memFragment
}

type memFragment struct {
	meta FragmentMeta
	data []byte
}

var _ Store = (*Mem)(nil)

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	return &Mem{streams: make(map[string]*memStream), retired: make(map[string]uint64)}
}

func (m *Mem) stream(name string) (*memStream, error) {
	if m.closed {
		return nil, ErrClosed
	}
	s, ok := m.streams[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrStreamNotFound, name)
	}
	return s, nil
}

// CreateStream implements Store.
func (m *Mem) CreateStream(_ context.Context, s Stream) error {
	if s.Name == "" {
		return fmt.Errorf("store: create stream: empty name")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.streams[s.Name]; ok {
		return fmt.Errorf("%w: %s", ErrStreamExists, s.Name)
	}
	m.streams[s.Name] = &memStream{info: copyStream(s), next: max(1, m.retired[s.Name])}
	return nil
}

// GetStream implements Store.
func (m *Mem) GetStream(_ context.Context, name string) (Stream, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(name)
	if err != nil {
		return Stream{}, err
	}
	return copyStream(s.info), nil
}

// ListStreams implements Store.
func (m *Mem) ListStreams(_ context.Context) ([]Stream, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	return sortedStreams(m.streams, func(s *memStream) Stream { return s.info }), nil
}

// UpdateStream implements Store. Renaming through fn is refused.
func (m *Mem) UpdateStream(_ context.Context, name string, fn func(*Stream) error) (Stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.stream(name)
	if err != nil {
		return Stream{}, err
	}
	c, err := updatedStream(s.info, name, fn)
	if err != nil {
		return Stream{}, err
	}
	s.info = copyStream(c)
	return c, nil
}

// DeleteStream implements Store.
func (m *Mem) DeleteStream(_ context.Context, name, version string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.stream(name)
	if err != nil {
		return err
	}
	if version != "" && s.info.Version != version {
		return fmt.Errorf("delete stream %s: %w", name, ErrVersionMismatch)
	}
	delete(m.streams, name)
	m.retired[name] = s.next
	return nil
}

// Prepare implements Store; Mem has nothing to get ready, so it only checks that the stream
// exists.
func (m *Mem) Prepare(_ context.Context, stream string) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, err := m.stream(stream)
	return err
}

// NextNumber implements Store.
func (m *Mem) NextNumber(_ context.Context, stream string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.stream(stream)
	if err != nil {
		return 0, err
	}
	n := s.next
	s.next++
	return n, nil
}

// AppendAsync implements Store. The data is copied and readable at once: it is as durable as Mem
// gets before AppendAsync returns, so wait returns nil.
func (m *Mem) AppendAsync(ctx context.Context, stream string, meta FragmentMeta, data []byte) (wait func(context.Context) error, err error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("append %s: %w (%d bytes)", stream, ErrRecordTooLarge, len(data))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.stream(stream)
	if err != nil {
		return nil, err
	}
	if s.info.RetentionHours <= 0 {
		return nil, fmt.Errorf("append %s: %w", stream, ErrNoRetention)
	}
	if meta.Number <= s.last || meta.Number >= s.next {
		return nil, fmt.Errorf("append %s fragment %d: %w", stream, meta.Number, ErrNumberOrder)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if meta.Checksum != 0 && meta.Checksum != crc32.Checksum(data, record.Castagnoli) {
		return nil, fmt.Errorf("append %s fragment %d: Checksum %08x is not the data's CRC-32C", stream, meta.Number, meta.Checksum)
	}
	s.last = meta.Number
	s.frags = append(s.frags, memFragment{normMeta(meta, len(data)), bytes.Clone(data)})
	s.trim()
	return memWait, nil
}

// trim deletes the stream's oldest fragments while its payloads take more than its
// kvs:max-bytes cap (MaxBytesTag), keeping the newest. m.mu is held.
func (s *memStream) trim() {
	limit, _ := MaxBytes(s.info)
	if limit <= 0 {
		return
	}
	var total int64
	for _, f := range s.frags {
		total += f.meta.Size
	}
	drop := 0
	for ; total > limit && drop < len(s.frags)-1; drop++ {
		total -= s.frags[drop].meta.Size
	}
	if drop > 0 {
		clear(s.frags[:drop])
		s.frags = s.frags[drop:]
	}
}

func memWait(context.Context) error { return nil }

// find returns the index of fragment number n, or -1.
func (s *memStream) find(n uint64) int {
	i := sort.Search(len(s.frags), func(i int) bool { return s.frags[i].meta.Number >= n })
	if i < len(s.frags) && s.frags[i].meta.Number == n {
		return i
	}
	return -1
}

// Fragment implements Store.
func (m *Mem) Fragment(_ context.Context, stream string, number uint64) (FragmentMeta, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return FragmentMeta{}, err
	}
	i := s.find(number)
	if i < 0 {
		return FragmentMeta{}, fmt.Errorf("%w: %s/%d", ErrFragmentNotFound, stream, number)
	}
	return s.frags[i].meta, nil
}

// Open implements Store. The reader holds the fragment in memory; it stays readable after the
// fragment is deleted.
func (m *Mem) Open(_ context.Context, stream string, number uint64) (io.ReadCloser, FragmentMeta, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return nil, FragmentMeta{}, err
	}
	i := s.find(number)
	if i < 0 {
		return nil, FragmentMeta{}, fmt.Errorf("%w: %s/%d", ErrFragmentNotFound, stream, number)
	}
	f := s.frags[i]
	return io.NopCloser(bytes.NewReader(f.data)), f.meta, nil
}

// AppendPayload implements Store.
func (m *Mem) AppendPayload(_ context.Context, stream string, number uint64, b []byte) ([]byte, FragmentMeta, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return b, FragmentMeta{}, err
	}
	i := s.find(number)
	if i < 0 {
		return b, FragmentMeta{}, fmt.Errorf("%w: %s/%d", ErrFragmentNotFound, stream, number)
	}
	return append(b, s.frags[i].data...), s.frags[i].meta, nil
}

// Range implements Store.
func (m *Mem) Range(_ context.Context, stream string, from uint64, limit int) ([]FragmentMeta, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(s.frags), func(i int) bool { return s.frags[i].meta.Number >= from })
	var out []FragmentMeta
	for ; i < len(s.frags) && (limit <= 0 || len(out) < limit); i++ {
		out = append(out, s.frags[i].meta)
	}
	return out, nil
}

// TimeRange implements Store. It scans all of the stream's fragments: Mem is not built for size.
func (m *Mem) TimeRange(_ context.Context, stream string, kind TimeKind, start, end time.Time, after Cursor, limit int) ([]FragmentMeta, error) {
	if !validKind(kind) {
		return nil, errBadKind
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return nil, err
	}
	lo, hi := timeToNanos(start), timeToNanos(end)
	cur := timeKey{timeToNanos(after.Time), after.Number}
	var out []FragmentMeta
	for _, f := range s.frags {
		k := metaTimeKey(f.meta, kind)
		if k.nanos >= lo && k.nanos <= hi && cur.less(k) {
			out = append(out, f.meta)
		}
	}
	sort.Slice(out, func(i, j int) bool { return metaTimeKey(out[i], kind).less(metaTimeKey(out[j], kind)) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// First implements Store.
func (m *Mem) First(_ context.Context, stream string) (FragmentMeta, error) {
	return m.end(stream, true)
}

// Last implements Store.
func (m *Mem) Last(_ context.Context, stream string) (FragmentMeta, error) {
	return m.end(stream, false)
}

func (m *Mem) end(stream string, first bool) (FragmentMeta, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, err := m.stream(stream)
	if err != nil {
		return FragmentMeta{}, err
	}
	if len(s.frags) == 0 {
		return FragmentMeta{}, fmt.Errorf("%w: %s is empty", ErrFragmentNotFound, stream)
	}
	if first {
		return s.frags[0].meta, nil
	}
	return s.frags[len(s.frags)-1].meta, nil
}

// EnforceRetention implements Store: it removes each fragment whose ServerTime is before
// now - RetentionHours.
func (m *Mem) EnforceRetention(_ context.Context, now time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	n := 0
	for _, s := range m.streams {
		cutoff := retentionCutoff(now, s.info.RetentionHours)
		keep := s.frags[:0]
		for _, f := range s.frags {
			if f.meta.ServerTime.Before(cutoff) {
				n++
				continue
			}
			keep = append(keep, f)
		}
		clear(s.frags[len(keep):])
		s.frags = keep
		s.trim() // the cap may have been lowered since the last append
	}
	return n, nil
}

// Ready implements Store: a Mem is ready until it is closed.
func (m *Mem) Ready(context.Context) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Stats implements Store; Bytes are the payload bytes held.
func (m *Mem) Stats(context.Context) (Stats, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Stats{}, ErrClosed
	}
	st := Stats{Streams: len(m.streams)}
	for _, s := range m.streams {
		st.Fragments += int64(len(s.frags))
		for _, f := range s.frags {
			st.Bytes += f.meta.Size
		}
	}
	return st, nil
}

// Close implements Store; later calls return ErrClosed.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.streams = nil
	return nil
}
