package mkv

import (
	"fmt"
	"io"
	"math"
	"time"
)

// EventKind says what an Event carries.
type EventKind int

// Event kinds, in the order they normally appear in a document.
const (
	EventEBMLHeader EventKind = iota + 1 // an EBML header: DocType is set
	EventSegment                         // a Segment starts: Size is -1 when unknown
	EventInfo                            // Info: TimecodeScale is set
	EventTracks                          // Tracks: Tracks is set
	EventCluster                         // a Cluster starts: Timecode is set
	EventFrame                           // one frame of a SimpleBlock or Block (laced blocks give one event per frame)
	EventClusterEnd                      // the current Cluster ended
	EventTags                            // a level-1 Tags element: Tags is set
)

var eventKindNames = [...]string{"", "EBMLHeader", "Segment", "Info", "Tracks", "Cluster", "Frame", "ClusterEnd", "Tags"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one step of the parse. Only the fields named for its Kind are set.
type Event struct {
	Kind   EventKind
	Offset int64 // byte offset of the element's ID in the input (EventClusterEnd: the cluster's; EventFrame: the block's)
	Size   int64 // element data size, -1 when unknown (Segment, Cluster); EventFrame: the frame's size

	DocType       string  // EventEBMLHeader ("matroska" when absent)
	TimecodeScale uint64  // EventInfo: nanoseconds per tick (DefaultTimecodeScale when absent)
	Tracks        []Track // EventTracks; shared with Reader.Tracks, do not modify
	Timecode      int64   // EventCluster: cluster timecode in ticks
	Frame         Frame   // EventFrame: Timecode is absolute (cluster + block relative timecode)
	Tags          []Tag   // EventTags: owned by the caller
}

// Default caps (see the With* options).
const (
	DefaultMaxElementSize  = 64 << 20
	DefaultMaxFrameSize    = 50 << 20
	DefaultMaxTagsSize     = 1 << 20
	DefaultMaxFragmentSize = 50 << 20
)

type readerConfig struct {
	maxElementSize  int64
	maxFrameSize    int64
	maxTagsSize     int64
	maxFragmentSize int64
	skip            func(id uint32, offset, size int64)
	blockMemory     func(size int) []byte
	bufferSize      int
}

// Option configures a Reader or a FragmentReader.
type Option func(*readerConfig)

// WithMaxElementSize caps any element the Reader materializes other than blocks and Tags
// (EBML header, Info, Tracks), in bytes. Default 64 MiB.
func WithMaxElementSize(n int64) Option { return func(c *readerConfig) { c.maxElementSize = n } }

// WithMaxFrameSize caps a SimpleBlock or BlockGroup, in bytes. Default 50 MiB (the KVS maximum
// fragment size).
func WithMaxFrameSize(n int64) Option { return func(c *readerConfig) { c.maxFrameSize = n } }

// WithMaxTagsSize caps a level-1 Tags element, in bytes. Default 1 MiB.
func WithMaxTagsSize(n int64) Option { return func(c *readerConfig) { c.maxTagsSize = n } }

// WithMaxFragmentSize caps, for a FragmentReader, the frame and tag bytes of one fragment.
// Default 50 MiB. The Reader ignores it.
func WithMaxFragmentSize(n int64) Option { return func(c *readerConfig) { c.maxFragmentSize = n } }

// WithSkipHandler sets a callback called for every element the Reader skips without parsing
// (SeekHead, Cues, Void, CRC-32, Chapters, Attachments, unknown elements). offset is that of the
// element's ID; size is its data size. It is called synchronously from Next.
func WithSkipHandler(fn func(id uint32, offset, size int64)) Option {
	return func(c *readerConfig) { c.skip = fn }
}

// WithBlockMemory sets a function that gives the memory a SimpleBlock holding one frame (no
// lacing) is read into, in place of the Reader's own buffer: it is called, from Next, with the
// size of the whole element (its header and data) once the block's header says so, and returns
// a slice of that length, or nil to have the block read into the Reader's buffer as usual. The
// Reader writes the element there as it was read (its header with the size in as many bytes as
// the input had, then its data); the Frame's Data is the slice's tail, after the block's track
// number, timecode and flags. A caller that keeps frames as SimpleBlocks (the server's PutMedia)
// receives them in place this way, without copying each frame once more; with ReadAhead, a block
// whose memory is where the input was read to is not even copied once. Sizes are capped
// (WithMaxFrameSize) before it is called.
func WithBlockMemory(fn func(size int) []byte) Option {
	return func(c *readerConfig) { c.blockMemory = fn }
}

// WithBufferSize sets the size of the Reader's input buffer (default 64 KiB, at least 4 KiB).
// Frame data is copied out of this buffer when it holds it, and read past it, straight into the
// frame's memory, when it does not: a smaller buffer copies less of large frames (with
// WithBlockMemory) at the cost of more reads for small ones. With memory lent (ReadAhead), input
// is read there instead.
func WithBufferSize(n int) Option {
	return func(c *readerConfig) { c.bufferSize = max(n, 4<<10) }
}

// header is one element header as read from the input.
type header struct {
	id     uint32
	offset int64 // of the ID
	size   int64 // data size, -1 when unknown
	data   int64 // offset of the data
}

func (h header) end() int64 { return h.data + h.size }

// Reader is an incremental pull parser for a concatenation of Matroska/WebM documents (what
// GetMedia returns) or a single long one (what PutMedia receives). Memory use is bounded by the
// configured caps and does not grow with the input. A Reader is not safe for concurrent use.
type Reader struct {
	in  *input
	cfg readerConfig
	off int64 // bytes consumed
	err error // sticky
	eof bool  // the input returned io.EOF at an element boundary

	pending    header
	hasPending bool

	inSegment bool
	segEnd    int64 // -1 unknown

	inCluster        bool
	clusterAnnounced bool
	cluster          header
	clusterTimecode  int64

	docType       string
	timecodeScale uint64
	tracks        []Track

	// the current block, split into laced frames
	buf       []byte // block bytes, reused
	laces     []int  // frame sizes, reused
	lacePos   int    // offset of the next frame in block
	laceIdx   int
	block     []byte
	blockTC   int64
	blockKey  bool
	blockDur  int64
	blockPad  time.Duration // DiscardPadding of the block
	blockTrk  uint64
	laceStep  float64 // ticks between laced frames
	laceOpus  bool    // no laceStep: the frames are Opus and follow one another by their TOC durations
	laceAcc   float64 // laceOpus: ticks from the block's timecode to the next frame
	blockOffs int64

	ev Event
}

// NewReader returns a Reader over r. It buffers r internally (WithBufferSize), and reads ahead of
// what it has parsed.
func NewReader(r io.Reader, opts ...Option) *Reader {
	rd := &Reader{
		cfg: readerConfig{
			maxElementSize:  DefaultMaxElementSize,
			maxFrameSize:    DefaultMaxFrameSize,
			maxTagsSize:     DefaultMaxTagsSize,
			maxFragmentSize: DefaultMaxFragmentSize,
		},
		timecodeScale: DefaultTimecodeScale,
		docType:       "matroska",
	}
	for _, o := range opts {
		o(&rd.cfg)
	}
	size := rd.cfg.bufferSize
	if size == 0 {
		size = 64 << 10
	}
	rd.in = newInput(r, size)
	return rd
}

// Offset returns the number of input bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// TimecodeScale returns the current segment's TimecodeScale in nanoseconds per tick.
func (r *Reader) TimecodeScale() uint64 { return r.timecodeScale }

// Tracks returns the current segment's tracks (nil before its Tracks element). The slice is
// replaced, never modified, when a new Tracks element is read; callers must not modify it.
func (r *Reader) Tracks() []Track { return r.tracks }

// DocType returns the DocType of the last EBML header ("matroska" before any).
func (r *Reader) DocType() string { return r.docType }

// Next returns the next event. The *Event and Frame.Data are owned by the Reader and valid
// until the next call. At a clean end of input (between elements, outside any known-size
// element) it returns io.EOF; truncated or malformed input gives a *SyntaxError (truncation
// wraps io.ErrUnexpectedEOF). Errors are sticky.
func (r *Reader) Next() (*Event, error) {
	if r.err != nil {
		return nil, r.err
	}
	ev, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return ev, nil
}

func (r *Reader) event(kind EventKind, offset, size int64) *Event {
	// Field by field, not r.ev = Event{...}: a whole-struct store runs the GC write barrier over
	// every pointer field, which shows up per frame.
	ev := &r.ev
	ev.Kind, ev.Offset, ev.Size = kind, offset, size
	ev.TimecodeScale, ev.Timecode = 0, 0
	if ev.DocType != "" {
		ev.DocType = ""
	}
	if ev.Tracks != nil {
		ev.Tracks = nil
	}
	if ev.Tags != nil {
		ev.Tags = nil
	}
	if ev.Frame.Data != nil {
		ev.Frame.Data = nil
	}
	ev.Frame.Track, ev.Frame.Timecode, ev.Frame.Keyframe, ev.Frame.Duration, ev.Frame.DiscardPadding = 0, 0, false, 0, 0
	return ev
}

func (r *Reader) endCluster() *Event {
	r.inCluster = false
	return r.event(EventClusterEnd, r.cluster.offset, r.cluster.size)
}

// announceCluster emits EventCluster, once per cluster, when its Timecode or first other child arrives.
func (r *Reader) announceCluster(tc int64) *Event {
	r.clusterAnnounced = true
	r.clusterTimecode = tc
	ev := r.event(EventCluster, r.cluster.offset, r.cluster.size)
	ev.Timecode = tc
	return ev
}

func (r *Reader) next() (*Event, error) {
	for {
		if r.laceIdx < len(r.laces) {
			return r.nextLace(), nil
		}
		if r.inCluster {
			if r.cluster.size >= 0 && r.off >= r.cluster.end() {
				if !r.clusterAnnounced {
					return r.announceCluster(0), nil
				}
				return r.endCluster(), nil
			}
			if r.cluster.size < 0 && r.inSegment && r.segEnd >= 0 && r.off >= r.segEnd {
				if !r.clusterAnnounced {
					return r.announceCluster(0), nil
				}
				return r.endCluster(), nil
			}
		}
		if r.inSegment && r.segEnd >= 0 && r.off >= r.segEnd {
			r.inSegment = false
		}

		h, err := r.header()
		if err == io.EOF {
			switch {
			case r.inCluster && r.cluster.size >= 0, r.inSegment && r.segEnd >= 0:
				id := uint32(IDSegment)
				if r.inCluster && r.cluster.size >= 0 {
					id = IDCluster
				}
				return nil, &SyntaxError{Offset: r.off, ID: id, Err: io.ErrUnexpectedEOF}
			case r.inCluster:
				if !r.clusterAnnounced {
					return r.announceCluster(0), nil
				}
				return r.endCluster(), nil
			}
			r.inSegment = false
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}

		switch {
		case r.inCluster:
			ev, err := r.clusterChild(h)
			if ev != nil || err != nil {
				return ev, err
			}
		case r.inSegment:
			ev, err := r.segmentChild(h)
			if ev != nil || err != nil {
				return ev, err
			}
		default:
			ev, err := r.topLevel(h)
			if ev != nil || err != nil {
				return ev, err
			}
		}
	}
}

// isLevel1 reports whether id cannot be a child of a Cluster and ends an unknown-size one.
func isLevel1(id uint32) bool {
	switch id {
	case IDCluster, IDTags, IDCues, IDInfo, IDTracks, IDSeekHead, IDChapters, IDAttachments, IDEBML, IDSegment:
		return true
	}
	return false
}

func (r *Reader) topLevel(h header) (*Event, error) {
	switch h.id {
	case IDEBML:
		if err := r.need(h, r.cfg.maxElementSize); err != nil {
			return nil, err
		}
		data, err := r.readData(h)
		if err != nil {
			return nil, err
		}
		docType, err := parseEBMLHeader(data)
		if err != nil {
			return nil, r.syntax(h, err)
		}
		r.docType = docType
		ev := r.event(EventEBMLHeader, h.offset, h.size)
		ev.DocType = docType
		return ev, nil
	case IDSegment:
		r.inSegment = true
		r.segEnd = -1
		if h.size >= 0 {
			r.segEnd = h.end()
		}
		r.timecodeScale = DefaultTimecodeScale
		r.tracks = nil
		return r.event(EventSegment, h.offset, h.size), nil
	}
	return nil, r.skip(h)
}

func (r *Reader) segmentChild(h header) (*Event, error) {
	switch h.id {
	case IDEBML, IDSegment:
		if r.segEnd >= 0 {
			return nil, r.syntax(h, errUnexpected)
		}
		// An unknown-size Segment ends where the next document starts.
		r.inSegment = false
		return r.topLevel(h)
	case IDCluster:
		if err := r.within(h, r.segEnd, true); err != nil {
			return nil, err
		}
		r.inCluster = true
		r.clusterAnnounced = false
		r.cluster = h
		return nil, nil
	case IDInfo, IDTracks, IDTags:
		return r.level1(h)
	}
	if err := r.within(h, r.segEnd, false); err != nil {
		return nil, err
	}
	return nil, r.skip(h)
}

func (r *Reader) clusterChild(h header) (*Event, error) {
	if isLevel1(h.id) {
		if r.cluster.size >= 0 {
			return nil, r.syntax(h, errUnexpected)
		}
		// An unknown-size Cluster ends at the first element that cannot be its child.
		r.pending, r.hasPending = h, true
		if !r.clusterAnnounced {
			return r.announceCluster(0), nil
		}
		return r.endCluster(), nil
	}
	end := r.cluster.end()
	if r.cluster.size < 0 {
		end = r.segEnd
	}
	if err := r.within(h, end, false); err != nil {
		return nil, err
	}
	switch h.id {
	case IDTimecode:
		if r.clusterAnnounced {
			return nil, r.skip(h)
		}
		if h.size > 8 {
			return nil, r.syntax(h, errBadValue)
		}
		data, err := r.readData(h)
		if err != nil {
			return nil, err
		}
		tc := readUint(data)
		if tc > math.MaxInt64/2 {
			return nil, r.syntax(h, errTimecodeRange)
		}
		return r.announceCluster(int64(tc)), nil
	case IDSimpleBlock, IDBlockGroup:
		if !r.clusterAnnounced {
			r.pending, r.hasPending = h, true
			return r.announceCluster(0), nil
		}
		if err := r.need(h, r.cfg.maxFrameSize); err != nil {
			return nil, err
		}
		var data []byte
		var err error
		if dst := r.blockMemory(h); dst != nil {
			data, err = r.readInto(h, dst)
		} else {
			data, err = r.readData(h)
		}
		if err != nil {
			return nil, err
		}
		if err := r.startBlock(h, data); err != nil {
			return nil, r.syntax(h, err)
		}
		return r.nextLace(), nil
	}
	return nil, r.skip(h)
}

// header returns the pending header or reads the next one. It returns io.EOF, unwrapped, only
// when the input ends exactly at an element boundary.
func (r *Reader) header() (header, error) {
	if r.hasPending {
		r.hasPending = false
		return r.pending, nil
	}
	if r.eof {
		return header{}, io.EOF
	}
	start := r.off
	id, size, n, err := readElementHeader(r.in)
	r.off += int64(n)
	if err != nil {
		if err == io.EOF && n == 0 { //nolint:errorlint // io.Reader contract
			r.eof = true
			return header{}, io.EOF
		}
		return header{}, &SyntaxError{Offset: start, ID: id, Err: err}
	}
	return header{id: id, offset: start, size: size, data: r.off}, nil
}

func (r *Reader) syntax(h header, err error) error {
	return &SyntaxError{Offset: h.offset, ID: h.id, Err: err}
}

// level1 reads and parses a level-1 element that is materialized (Info, Tracks, Tags) into its
// event: its size must be known, at most its cap, and inside the current segment.
func (r *Reader) level1(h header) (*Event, error) {
	limit := r.cfg.maxElementSize
	if h.id == IDTags {
		limit = r.cfg.maxTagsSize
	}
	if err := r.need(h, limit); err != nil {
		return nil, err
	}
	if err := r.within(h, r.segEnd, false); err != nil {
		return nil, err
	}
	data, err := r.readData(h)
	if err != nil {
		return nil, err
	}
	ev := r.event(0, h.offset, h.size)
	switch h.id {
	case IDInfo:
		ev.Kind = EventInfo
		ev.TimecodeScale, err = parseInfo(data)
	case IDTracks:
		ev.Kind = EventTracks
		ev.Tracks, err = parseTracks(data)
	default:
		ev.Kind = EventTags
		ev.Tags, err = parseTags(data)
	}
	if err != nil {
		return nil, r.syntax(h, err)
	}
	switch ev.Kind {
	case EventInfo:
		r.timecodeScale = ev.TimecodeScale
	case EventTracks:
		r.tracks = ev.Tracks
	}
	return ev, nil
}

// need checks that h has a known size no larger than limit.
func (r *Reader) need(h header, limit int64) error {
	if h.size < 0 {
		return r.syntax(h, errUnknownSize)
	}
	if h.size > limit {
		return r.syntax(h, fmt.Errorf("%d bytes, limit %d: %w", h.size, limit, ErrElementTooLarge))
	}
	return nil
}

// within checks that h fits in a parent ending at end (-1: unknown). Unknown sizes are allowed
// only when unknownOK.
func (r *Reader) within(h header, end int64, unknownOK bool) error {
	if h.size < 0 {
		if !unknownOK {
			return r.syntax(h, errUnknownSize)
		}
		return nil
	}
	if end >= 0 && h.end() > end {
		return r.syntax(h, errOverflow)
	}
	return nil
}

// skip discards h's data without allocating.
func (r *Reader) skip(h header) error {
	if h.size < 0 {
		return r.syntax(h, errUnknownSize)
	}
	if r.cfg.skip != nil {
		r.cfg.skip(h.id, h.offset, h.size)
	}
	remaining := h.size
	for remaining > 0 {
		chunk := remaining
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		n, err := r.in.Discard(int(chunk))
		r.off += int64(n)
		remaining -= int64(n)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r.syntax(h, err)
		}
	}
	return nil
}

// readData reads h's data into the reusable buffer. The caller has checked h.size against a
// cap; still, the buffer grows only as data arrives, so a size that lies costs at most about twice
// the bytes actually read.
func (r *Reader) readData(h header) ([]byte, error) {
	n := int(h.size)
	buf := r.buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			c := max(2*cap(buf), 64<<10)
			c = min(c, n)
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			buf = nb
			r.buf = buf
		}
		m, err := io.ReadFull(r.in, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		r.off += int64(m)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, r.syntax(h, err)
		}
	}
	return buf, nil
}
