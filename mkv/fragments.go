package mkv

import (
	"fmt"
	"io"
	"math"

	"github.com/openkvs/kvs/internal/bufpool"
)

// FragmentReader assembles a stream of MKV documents (GetMedia chunks, or one PutMedia body
// with many clusters) into Fragments, one per Cluster. A Fragment's Tags are the SimpleTags of the
// level-1 Tags elements read since the previous cluster (or since the segment started) and before
// its Cluster; its TrailingTags are those after the Cluster.
//
// A fragment is delivered when the next Cluster, EBML header or Segment starts, at the end of
// input, or, so that a live GetMedia reader does not wait for the next chunk, as soon as a
// trailing Tags element carries AWS_KINESISVIDEO_CONTINUATION_TOKEN or
// AWS_KINESISVIDEO_END_OF_FRAGMENT (the last element of a KVS chunk, or a producer's explicit end
// of fragment); Tags after that go to the next fragment. A document that holds Tags but no Cluster
// (a KVS error chunk) is delivered as a Fragment without Frames.
//
// Memory is bounded by WithMaxFragmentSize (frame data and Tags bytes per fragment, default
// 50 MiB) plus the Reader's caps. A FragmentReader is not safe for concurrent use.
type FragmentReader struct {
	r   *Reader
	max int64
	err error

	leading      []SimpleTag
	leadingBytes int64

	cur       *Fragment
	curClosed bool
	curBytes  int64
	arena     []byte
	offsets   []int // start of each frame's data in arena
	lastSize  int   // arena size of the previous fragment, to size the next one

	// a Cluster event seen while a fragment was still open
	startPending bool
	pendingTC    int64
	pendingSize  int64
}

// NewFragmentReader returns a FragmentReader over r; opts configure its Reader and
// WithMaxFragmentSize.
func NewFragmentReader(r io.Reader, opts ...Option) *FragmentReader {
	rd := NewReader(r, opts...)
	return &FragmentReader{r: rd, max: rd.cfg.maxFragmentSize}
}

// Next returns the next fragment, owned by the caller: Frames have their own copies of the data
// (one allocation per fragment); Tracks is shared with other fragments of the same segment and
// must not be modified. At a clean end of input it returns io.EOF; errors are those of Reader
// and are sticky. A fragment cut short by an error is not returned.
func (f *FragmentReader) Next() (*Fragment, error) {
	if f.err != nil {
		return nil, f.err
	}
	frag, err := f.next()
	if err != nil {
		f.err = err
		f.cur = nil
		return nil, err
	}
	return frag, nil
}

func (f *FragmentReader) next() (*Fragment, error) {
	for {
		if f.startPending {
			f.startPending = false
			f.start(f.pendingTC, f.pendingSize)
		}
		ev, err := f.r.Next()
		if err == io.EOF {
			if out := f.flush(); out != nil {
				return out, nil
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		switch ev.Kind {
		case EventEBMLHeader, EventSegment:
			if out := f.flush(); out != nil {
				return out, nil
			}
		case EventCluster:
			if f.cur != nil {
				f.startPending = true
				f.pendingTC, f.pendingSize = ev.Timecode, ev.Size
				return f.finish(), nil
			}
			f.start(ev.Timecode, ev.Size)
		case EventFrame:
			if err := f.add(ev); err != nil {
				return nil, err
			}
		case EventClusterEnd:
			f.curClosed = true
		case EventTags:
			if err := f.tags(ev); err != nil {
				return nil, err
			}
			if f.cur != nil && f.curClosed && endsChunk(ev.Tags) {
				return f.finish(), nil
			}
		}
	}
}

func (f *FragmentReader) tooLarge(offset int64) error {
	return &SyntaxError{Offset: offset, ID: IDCluster,
		Err: fmt.Errorf("fragment larger than %d bytes: %w", f.max, ErrElementTooLarge)}
}

// start opens a fragment for a cluster at tc of size bytes (-1: unknown). A known cluster size
// bounds its frame data, so the arena is allocated once at that size (growing it frame by frame
// copied each 5 MB fragment about twice over); otherwise it starts at the previous fragment's size.
func (f *FragmentReader) start(tc, size int64) {
	f.cur = &Fragment{
		DocType:       f.r.DocType(),
		TimecodeScale: f.r.TimecodeScale(),
		Tracks:        f.r.Tracks(),
		Tags:          f.leading,
		Timecode:      tc,
	}
	f.curClosed = false
	f.curBytes = f.leadingBytes
	f.leading, f.leadingBytes = nil, 0
	c := int64(f.lastSize)
	if size > 0 {
		c = min(size, f.max)
	}
	f.arena = bufpool.Get(int(c))
	f.offsets = f.offsets[:0]
}

func (f *FragmentReader) add(ev *Event) error {
	if f.cur == nil { // cannot happen: the Reader announces every cluster first
		f.start(ev.Frame.Timecode, -1)
	}
	n := int64(len(ev.Frame.Data))
	if f.curBytes+n > f.max {
		return f.tooLarge(ev.Offset)
	}
	f.curBytes += n
	f.offsets = append(f.offsets, len(f.arena))
	f.arena = append(bufpool.Grow(f.arena, len(ev.Frame.Data)), ev.Frame.Data...) // frames hold offsets, not slices, until finish
	fr := ev.Frame
	fr.Data = nil
	f.cur.Frames = append(f.cur.Frames, fr)
	return nil
}

func (f *FragmentReader) tags(ev *Event) error {
	var simple []SimpleTag
	for _, t := range ev.Tags {
		simple = append(simple, t.SimpleTags...)
	}
	if f.cur != nil && f.curClosed {
		if f.curBytes+ev.Size > f.max {
			return f.tooLarge(ev.Offset)
		}
		f.curBytes += ev.Size
		f.cur.TrailingTags = append(f.cur.TrailingTags, simple...)
		return nil
	}
	if f.leadingBytes+ev.Size > f.max {
		return f.tooLarge(ev.Offset)
	}
	f.leadingBytes += ev.Size
	f.leading = append(f.leading, simple...)
	return nil
}

// flush returns the open fragment or, failing that, a frameless fragment holding leading tags.
func (f *FragmentReader) flush() *Fragment {
	if f.cur != nil {
		return f.finish()
	}
	if len(f.leading) == 0 {
		return nil
	}
	out := &Fragment{
		DocType:       f.r.DocType(),
		TimecodeScale: f.r.TimecodeScale(),
		Tracks:        f.r.Tracks(),
		Tags:          f.leading,
	}
	f.leading, f.leadingBytes = nil, 0
	return out
}

func (f *FragmentReader) finish() *Fragment {
	out := f.cur
	f.cur = nil
	for i := range out.Frames {
		end := len(f.arena)
		if i+1 < len(f.offsets) {
			end = f.offsets[i+1]
		}
		out.Frames[i].Data = f.arena[f.offsets[i]:end:end]
	}
	f.lastSize = len(f.arena)
	out.arena = f.arena
	f.arena = nil
	return out
}

// Release gives the memory of f's frame data back for reuse (internal/bufpool, the buffer pool of
// kvs), so that a later fragment reuses memory the process already has instead of fresh pages: in
// get-fragments of 5 MB fragments the page faults of fresh buffers cost more CPU than the copies
// themselves. After Release, f.Frames is nil and the Data of frames taken from it must not be
// used. Release does nothing for fragments that a FragmentReader did not make, and is safe to call
// more than once (but not concurrently).
func (f *Fragment) Release() {
	if f.arena == nil {
		return
	}
	b := f.arena
	f.arena, f.Frames = nil, nil
	bufpool.Put(b)
}

func endsChunk(tags []Tag) bool {
	for _, t := range tags {
		for i := range t.SimpleTags {
			if findTag(t.SimpleTags[i:i+1], TagContinuationToken) != nil || findTag(t.SimpleTags[i:i+1], TagEndOfFragment) != nil {
				return true
			}
		}
	}
	return false
}

// findTag searches tags depth-first for a SimpleTag called name.
func findTag(tags []SimpleTag, name string) *SimpleTag {
	for i := range tags {
		if tags[i].Name == name {
			return &tags[i]
		}
		if t := findTag(tags[i].Children, name); t != nil {
			return t
		}
	}
	return nil
}

// Tag returns the TagString value of the first SimpleTag called name, searching Tags and then
// TrailingTags, nested SimpleTags included.
func (f *Fragment) Tag(name string) (string, bool) {
	if t := findTag(f.Tags, name); t != nil {
		return t.Value, true
	}
	if t := findTag(f.TrailingTags, name); t != nil {
		return t.Value, true
	}
	return "", false
}

// Duration returns the fragment's duration in ticks: the end of its last-ending frame minus the
// timecode of its first frame. A frame lasts its Duration, else its track's DefaultDuration, else
// the mean spacing of its track's frames in this fragment (0 for a lone frame).
func (f *Fragment) Duration() int64 { return f.DurationTo(0) }

// DurationTo is Duration measured to the end of track's frames: the frames of the other tracks
// count until they start, not until they end. A fragment cut at keyframes of track lasts until
// its next keyframe, and the last frame of another track presented before that keyframe (an AAC
// frame lasts 21 ms at 48 kHz) ends after it, in the next fragment's time. It is Duration when
// track is 0 or no frame is of track.
func (f *Fragment) DurationTo(track uint64) int64 {
	if len(f.Frames) == 0 {
		return 0
	}
	scale := f.TimecodeScale
	if scale == 0 {
		scale = DefaultTimecodeScale
	}
	type span struct {
		min, max int64
		n        int64
		def      int64
	}
	spans := make(map[uint64]*span, len(f.Tracks))
	first := int64(math.MaxInt64)
	for i := range f.Frames {
		fr := &f.Frames[i]
		first = min(first, fr.Timecode)
		s := spans[fr.Track]
		if s == nil {
			s = &span{min: fr.Timecode, max: fr.Timecode, def: -1}
			spans[fr.Track] = s
		}
		s.min, s.max = min(s.min, fr.Timecode), max(s.max, fr.Timecode)
		s.n++
	}
	if spans[track] == nil {
		track = 0
	}
	for _, t := range f.Tracks {
		if s := spans[t.Number]; s != nil && t.DefaultDuration > 0 {
			s.def = int64(math.Round(float64(t.DefaultDuration) / float64(scale)))
		}
	}
	last := int64(math.MinInt64)
	for i := range f.Frames {
		fr := &f.Frames[i]
		d := fr.Duration
		if track != 0 && fr.Track != track {
			d = 0
		} else if d <= 0 {
			s := spans[fr.Track]
			switch {
			case s.def >= 0:
				d = s.def
			case s.n > 1:
				d = (s.max - s.min) / (s.n - 1)
			}
		}
		last = max(last, fr.Timecode+d)
	}
	return last - first
}
