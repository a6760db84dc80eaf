package mkv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// ErrElementTooLarge reports an element (or, from FragmentReader, a fragment) larger than the
// configured cap. It is returned, wrapped in a *SyntaxError, before anything is allocated for it.
var ErrElementTooLarge = errors.New("element too large")

// Errors wrapped in *SyntaxError for malformed input.
var (
	errBadID         = errors.New("invalid element ID")
	errBadSize       = errors.New("invalid element size")
	errUnknownSize   = errors.New("unknown size not allowed for this element")
	errOverflow      = errors.New("element overflows its parent")
	errUnexpected    = errors.New("element not allowed here")
	errBadBlock      = errors.New("malformed block")
	errBadLacing     = errors.New("malformed lacing")
	errBadValue      = errors.New("malformed value")
	errTooDeep       = errors.New("tags nested too deep")
	errTimecodeRange = errors.New("timecode out of range")
)

// SyntaxError reports malformed input at a byte offset; Err is the underlying cause
// (io.ErrUnexpectedEOF for truncation, ErrElementTooLarge for an over-size element).
type SyntaxError struct {
	Offset int64  // byte offset of the offending element's ID in the input
	ID     uint32 // the element's ID; 0 when the ID itself could not be read
	Err    error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("mkv: offset %d, element %#x: %v", e.Offset, e.ID, e.Err)
}

// Unwrap returns the underlying cause.
func (e *SyntaxError) Unwrap() error { return e.Err }

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
	br  *bufio.Reader
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
	blockOffs int64

	ev Event
}

// NewReader returns a Reader over r. It buffers r internally.
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
	if br, ok := r.(*bufio.Reader); ok && br.Size() >= 64<<10 {
		rd.br = br
	} else {
		rd.br = bufio.NewReaderSize(r, 64<<10)
	}
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
	case IDInfo:
		data, err := r.readLevel1(h, r.cfg.maxElementSize)
		if err != nil {
			return nil, err
		}
		scale, err := parseInfo(data)
		if err != nil {
			return nil, r.syntax(h, err)
		}
		r.timecodeScale = scale
		ev := r.event(EventInfo, h.offset, h.size)
		ev.TimecodeScale = scale
		return ev, nil
	case IDTracks:
		data, err := r.readLevel1(h, r.cfg.maxElementSize)
		if err != nil {
			return nil, err
		}
		tracks, err := parseTracks(data)
		if err != nil {
			return nil, r.syntax(h, err)
		}
		r.tracks = tracks
		ev := r.event(EventTracks, h.offset, h.size)
		ev.Tracks = tracks
		return ev, nil
	case IDTags:
		data, err := r.readLevel1(h, r.cfg.maxTagsSize)
		if err != nil {
			return nil, err
		}
		tags, err := parseTags(data)
		if err != nil {
			return nil, r.syntax(h, err)
		}
		ev := r.event(EventTags, h.offset, h.size)
		ev.Tags = tags
		return ev, nil
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
		data, err := r.readData(h)
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

// startBlock parses a SimpleBlock or BlockGroup held in data and sets up its frames.
func (r *Reader) startBlock(h header, data []byte) error {
	key := true
	var dur int64
	var pad time.Duration
	block := data
	if h.id == IDBlockGroup {
		block = nil
		for p := 0; p < len(data); {
			id, size, n, err := parseHeader(data[p:])
			if err != nil {
				return err
			}
			p += n
			v := data[p : p+int(size)]
			p += int(size)
			switch id {
			case IDBlock:
				if block == nil {
					block = v
				}
			case IDBlockDuration:
				if size > 8 {
					return errBadValue
				}
				d := readUint(v)
				if d > math.MaxInt64/2 {
					return errTimecodeRange
				}
				dur = int64(d)
			case IDReferenceBlock:
				key = false
			case IDDiscardPadding:
				if size > 8 {
					return errBadValue
				}
				pad = time.Duration(readInt(v))
			}
		}
		if block == nil {
			return errBadBlock
		}
	}
	track, n := readVint(block)
	if n <= 0 || len(block) < n+3 {
		return errBadBlock
	}
	rel := int16(uint16(block[n])<<8 | uint16(block[n+1]))
	flags := block[n+2]
	if h.id == IDSimpleBlock {
		key = flags&0x80 != 0
	}
	p := n + 3
	r.laces = r.laces[:0]
	switch (flags >> 1) & 3 {
	case 0:
		r.laces = append(r.laces, len(block)-p)
	case 1: // Xiph
		if p >= len(block) {
			return errBadLacing
		}
		count := int(block[p]) + 1
		p++
		total := 0
		for i := 0; i < count-1; i++ {
			size := 0
			for {
				if p >= len(block) {
					return errBadLacing
				}
				b := block[p]
				p++
				size += int(b)
				if b != 255 {
					break
				}
			}
			total += size
			r.laces = append(r.laces, size)
		}
		last := len(block) - p - total
		if last < 0 {
			return errBadLacing
		}
		r.laces = append(r.laces, last)
	case 3: // EBML
		if p >= len(block) {
			return errBadLacing
		}
		count := int(block[p]) + 1
		p++
		total := 0
		size := 0
		for i := 0; i < count-1; i++ {
			v, m := readVint(block[p:])
			if m <= 0 {
				return errBadLacing
			}
			if i == 0 {
				if v > uint64(len(block)) {
					return errBadLacing
				}
				size = int(v)
			} else {
				// signed difference: subtract the bias 2^(7m-1)-1
				bias := int64(1)<<(7*m-1) - 1
				size += int(int64(v) - bias)
			}
			p += m
			if size < 0 || size > len(block) {
				return errBadLacing
			}
			total += size
			if total > len(block) {
				return errBadLacing
			}
			r.laces = append(r.laces, size)
		}
		last := len(block) - p - total
		if last < 0 {
			return errBadLacing
		}
		r.laces = append(r.laces, last)
	case 2: // fixed-size
		if p >= len(block) {
			return errBadLacing
		}
		count := int(block[p]) + 1
		p++
		rest := len(block) - p
		if rest%count != 0 {
			return errBadLacing
		}
		for i := 0; i < count; i++ {
			r.laces = append(r.laces, rest/count)
		}
	}
	r.block = block
	r.lacePos = p
	r.laceIdx = 0
	r.blockTC = r.clusterTimecode + int64(rel)
	r.blockKey = key
	r.blockTrk = track
	r.blockOffs = h.offset
	r.blockDur = dur
	r.blockPad = pad
	r.laceStep = 0
	if len(r.laces) > 1 {
		for i := range r.tracks {
			if r.tracks[i].Number == track && r.tracks[i].DefaultDuration > 0 {
				r.laceStep = float64(r.tracks[i].DefaultDuration) / float64(r.timecodeScale)
				break
			}
		}
		r.blockDur = dur / int64(len(r.laces))
	}
	return nil
}

func (r *Reader) nextLace() *Event {
	i := r.laceIdx
	size := r.laces[i]
	ev := r.event(EventFrame, r.blockOffs, int64(size))
	ev.Frame.Track = r.blockTrk
	ev.Frame.Timecode = r.blockTC
	if i > 0 && r.laceStep != 0 {
		ev.Frame.Timecode += int64(math.Round(float64(i) * r.laceStep))
	}
	ev.Frame.Keyframe = r.blockKey
	ev.Frame.Duration = r.blockDur
	// Padding at the start belongs to the block's first frame, padding at the end to its last.
	if r.blockPad < 0 && i == 0 || r.blockPad > 0 && i == len(r.laces)-1 {
		ev.Frame.DiscardPadding = r.blockPad
	}
	ev.Frame.Data = r.block[r.lacePos : r.lacePos+size : r.lacePos+size]
	r.lacePos += size
	r.laceIdx++
	if r.laceIdx == len(r.laces) {
		r.laces = r.laces[:0]
		r.laceIdx = 0
	}
	return ev
}

func (r *Reader) syntax(h header, err error) error {
	return &SyntaxError{Offset: h.offset, ID: h.id, Err: err}
}

// need checks that h has a known size no larger than limit.
// readLevel1 reads the data of a level-1 element that is materialized (Info, Tracks, Tags): its
// size must be known, at most limit, and inside the current segment.
func (r *Reader) readLevel1(h header, limit int64) ([]byte, error) {
	if err := r.need(h, limit); err != nil {
		return nil, err
	}
	if err := r.within(h, r.segEnd, false); err != nil {
		return nil, err
	}
	return r.readData(h)
}

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
		n, err := r.br.Discard(int(chunk))
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
		m, err := io.ReadFull(r.br, buf[len(buf):min(cap(buf), n)])
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
	b, err := r.br.ReadByte()
	if err != nil {
		if err == io.EOF {
			r.eof = true
			return header{}, io.EOF
		}
		return header{}, &SyntaxError{Offset: start, Err: err}
	}
	r.off++
	var idLen int
	switch {
	case b >= 0x80:
		idLen = 1
	case b >= 0x40:
		idLen = 2
	case b >= 0x20:
		idLen = 3
	case b >= 0x10:
		idLen = 4
	default:
		return header{}, &SyntaxError{Offset: start, ID: uint32(b), Err: errBadID}
	}
	id := uint32(b)
	for i := 1; i < idLen; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			return header{}, &SyntaxError{Offset: start, ID: id, Err: unexpected(err)}
		}
		r.off++
		id = id<<8 | uint32(c)
	}
	b, err = r.br.ReadByte()
	if err != nil {
		return header{}, &SyntaxError{Offset: start, ID: id, Err: unexpected(err)}
	}
	r.off++
	if b == 0 {
		return header{}, &SyntaxError{Offset: start, ID: id, Err: errBadSize}
	}
	sizeLen := 1
	for mask := byte(0x80); b&mask == 0; mask >>= 1 {
		sizeLen++
	}
	v := uint64(b & (0xFF >> sizeLen))
	allOnes := v == uint64(0xFF>>sizeLen)
	for i := 1; i < sizeLen; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			return header{}, &SyntaxError{Offset: start, ID: id, Err: unexpected(err)}
		}
		r.off++
		v = v<<8 | uint64(c)
		allOnes = allOnes && c == 0xFF
	}
	size := int64(v)
	if allOnes {
		size = -1
	}
	return header{id: id, offset: start, size: size, data: r.off}, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readVint decodes an EBML variable-size integer (marker bit removed) from the start of b and
// returns its value and length; n <= 0 when b is empty, starts with 0x00 or is too short.
func readVint(b []byte) (v uint64, n int) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0
	}
	n = 1
	for mask := byte(0x80); b[0]&mask == 0; mask >>= 1 {
		n++
	}
	if len(b) < n {
		return 0, 0
	}
	v = uint64(b[0] & (0xFF >> n))
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

// parseHeader decodes an element header from the start of b and checks that the element's data
// lies within b. It returns the ID, data size and header length.
func parseHeader(b []byte) (id uint32, size int64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, 0, io.ErrUnexpectedEOF
	}
	var idLen int
	switch c := b[0]; {
	case c >= 0x80:
		idLen = 1
	case c >= 0x40:
		idLen = 2
	case c >= 0x20:
		idLen = 3
	case c >= 0x10:
		idLen = 4
	default:
		return 0, 0, 0, errBadID
	}
	if len(b) < idLen {
		return 0, 0, 0, io.ErrUnexpectedEOF
	}
	for i := 0; i < idLen; i++ {
		id = id<<8 | uint32(b[i])
	}
	v, m := readVint(b[idLen:])
	if m <= 0 {
		if len(b) > idLen && b[idLen] == 0 {
			return id, 0, 0, errBadSize
		}
		return id, 0, 0, io.ErrUnexpectedEOF
	}
	if v == uint64(1)<<(7*m)-1 {
		return id, 0, 0, errUnknownSize
	}
	n = idLen + m
	if v > uint64(len(b)-n) {
		return id, 0, 0, errOverflow
	}
	return id, int64(v), n, nil
}

// children calls fn for each child element in data.
func children(data []byte, fn func(id uint32, v []byte) error) error {
	for p := 0; p < len(data); {
		id, size, n, err := parseHeader(data[p:])
		if err != nil {
			return err
		}
		p += n
		if err := fn(id, data[p:p+int(size)]); err != nil {
			return err
		}
		p += int(size)
	}
	return nil
}

func readUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// readInt decodes a big-endian two's-complement integer of at most 8 bytes (0 when empty).
func readInt(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	v := int64(int8(b[0]))
	for _, c := range b[1:] {
		v = v<<8 | int64(c)
	}
	return v
}

func parseUint(b []byte) (uint64, error) {
	if len(b) > 8 {
		return 0, errBadValue
	}
	return readUint(b), nil
}

func parseFloat(b []byte) (float64, error) {
	switch len(b) {
	case 0:
		return 0, nil
	case 4:
		return float64(math.Float32frombits(uint32(readUint(b)))), nil
	case 8:
		return math.Float64frombits(readUint(b)), nil
	}
	return 0, errBadValue
}

// parseString returns b up to its first NUL (EBML strings may be zero-padded).
func parseString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func parseEBMLHeader(data []byte) (string, error) {
	docType := "matroska"
	err := children(data, func(id uint32, v []byte) error {
		if id == IDDocType {
			docType = parseString(v)
		}
		return nil
	})
	return docType, err
}

func parseInfo(data []byte) (uint64, error) {
	scale := uint64(DefaultTimecodeScale)
	err := children(data, func(id uint32, v []byte) error {
		if id == IDTimecodeScale {
			s, err := parseUint(v)
			if err != nil {
				return err
			}
			if s != 0 {
				scale = s
			}
		}
		return nil
	})
	return scale, err
}

// durationNS converts an unsigned nanosecond count, saturating at the time.Duration range.
func durationNS(v uint64) time.Duration {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(v)
}

func parseTracks(data []byte) ([]Track, error) {
	var tracks []Track
	err := children(data, func(id uint32, v []byte) error {
		if id != IDTrackEntry {
			return nil
		}
		var t Track
		err := children(v, func(id uint32, v []byte) error {
			var err error
			var u uint64
			switch id {
			case IDTrackNumber:
				t.Number, err = parseUint(v)
			case IDTrackUID:
				t.UID, err = parseUint(v)
			case IDTrackType:
				u, err = parseUint(v)
				t.Type = uint8(u)
			case IDCodecID:
				t.CodecID = parseString(v)
			case IDCodecPrivate:
				t.CodecPrivate = append([]byte(nil), v...)
			case IDTrackName:
				t.Name = parseString(v)
			case IDDefaultDuration:
				u, err = parseUint(v)
				t.DefaultDuration = durationNS(u)
			case IDCodecDelay:
				u, err = parseUint(v)
				t.CodecDelay = durationNS(u)
			case IDVideo:
				err = children(v, func(id uint32, v []byte) error {
					var err error
					var u uint64
					switch id {
					case IDPixelWidth:
						u, err = parseUint(v)
						t.Width = uint32(u)
					case IDPixelHeight:
						u, err = parseUint(v)
						t.Height = uint32(u)
					}
					return err
				})
			case IDAudio:
				err = children(v, func(id uint32, v []byte) error {
					var err error
					var u uint64
					switch id {
					case IDSamplingFreq:
						t.SamplingRate, err = parseFloat(v)
					case IDChannels:
						u, err = parseUint(v)
						t.Channels = uint8(u)
					case IDBitDepth:
						u, err = parseUint(v)
						t.BitDepth = uint8(u)
					}
					return err
				})
			}
			return err
		})
		if err != nil {
			return err
		}
		tracks = append(tracks, t)
		return nil
	})
	return tracks, err
}

const maxTagDepth = 32

func parseTags(data []byte) ([]Tag, error) {
	var tags []Tag
	err := children(data, func(id uint32, v []byte) error {
		if id != IDTag {
			return nil
		}
		var tag Tag
		err := children(v, func(id uint32, v []byte) error {
			if id != IDSimpleTag {
				return nil // Targets and unknown elements
			}
			st, err := parseSimpleTag(v, 0)
			if err != nil {
				return err
			}
			tag.SimpleTags = append(tag.SimpleTags, st)
			return nil
		})
		if err != nil {
			return err
		}
		tags = append(tags, tag)
		return nil
	})
	return tags, err
}

func parseSimpleTag(data []byte, depth int) (SimpleTag, error) {
	var st SimpleTag
	if depth >= maxTagDepth {
		return st, errTooDeep
	}
	err := children(data, func(id uint32, v []byte) error {
		switch id {
		case IDTagName:
			st.Name = parseString(v)
		case IDTagString:
			st.Value = parseString(v)
		case IDTagBinary:
			st.Binary = append([]byte{}, v...)
		case IDSimpleTag:
			c, err := parseSimpleTag(v, depth+1)
			if err != nil {
				return err
			}
			st.Children = append(st.Children, c)
		}
		return nil
	})
	return st, err
}
