package mkv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	fuzzMaxElement = 1 << 20
	fuzzMaxFrame   = 1 << 20
	fuzzMaxTags    = 1 << 16
)

func fuzzOptions() []Option {
	return []Option{WithMaxElementSize(fuzzMaxElement), WithMaxFrameSize(fuzzMaxFrame), WithMaxTagsSize(fuzzMaxTags),
		WithMaxFragmentSize(4 << 20)}
}

// fuzzSeeds are the reader table inputs, KVS-style chunks and the golden clips.
func fuzzSeeds(f *testing.F) {
	for _, tc := range readerCases() {
		f.Add(tc.in)
	}
	f.Add(cat(chunk(f, 1), chunk(f, 2)))
	b, err := AppendFragment(nil, &roundTripFragment)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	clips, _ := filepath.Glob(filepath.Join("..", "testdata", "*.mkv"))
	webm, _ := filepath.Glob(filepath.Join("..", "testdata", "*.webm"))
	for _, name := range append(clips, webm...) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// renderFrame and renderTags give comparable text for round trips.
func renderFrame(fr *Frame) string {
	return fmt.Sprintf("%d@%d k%v d%d p%d %x", fr.Track, fr.Timecode, fr.Keyframe, fr.Duration, fr.DiscardPadding, fr.Data)
}

func renderTags(b *strings.Builder, tags []SimpleTag) {
	for _, t := range tags {
		if t.Binary != nil {
			// A SimpleTag with a TagBinary is written with that alone.
			fmt.Fprintf(b, "(%q bin %x ", t.Name, t.Binary)
		} else {
			fmt.Fprintf(b, "(%q str %q ", t.Name, t.Value)
		}
		renderTags(b, t.Children)
		b.WriteString(")")
	}
}

type fuzzCluster struct {
	docType  string
	scale    uint64
	tracks   []Track
	timecode int64
	frames   []Frame
}

// FuzzReader: no panic, errors are *SyntaxError, the block buffer stays under the frame cap, and
// whatever parses, written back as fragments and parsed again, gives the same frames and tags.
func FuzzReader(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), fuzzOptions()...)
		var clusters []fuzzCluster
		var tags []string
		var err error
		for {
			var ev *Event
			ev, err = r.Next()
			if err != nil {
				break
			}
			switch ev.Kind {
			case EventCluster:
				clusters = append(clusters, fuzzCluster{docType: r.DocType(), scale: r.TimecodeScale(), tracks: r.Tracks(), timecode: ev.Timecode})
			case EventFrame:
				c := &clusters[len(clusters)-1]
				fr := ev.Frame
				fr.Data = bytes.Clone(fr.Data)
				c.frames = append(c.frames, fr)
			case EventTags:
				var b strings.Builder
				for _, tag := range ev.Tags {
					renderTags(&b, tag.SimpleTags)
				}
				tags = append(tags, b.String())
			}
		}
		if c := cap(r.buf); c > max(fuzzMaxFrame, fuzzMaxElement) {
			t.Fatalf("block buffer grew to %d bytes", c)
		}
		if err != io.EOF {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not a *SyntaxError", err, err)
			}
			return
		}

		for i, c := range clusters {
			out, err := AppendFragment(nil, &Fragment{DocType: c.docType, TimecodeScale: c.scale, Tracks: c.tracks, Timecode: c.timecode, Frames: c.frames})
			if err != nil {
				continue // e.g. laced frames spaced beyond int16 of the cluster
			}
			r2 := NewReader(bytes.NewReader(out))
			var got []Frame
			for {
				ev, err := r2.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("cluster %d: rewritten fragment does not parse: %v", i, err)
				}
				if ev.Kind == EventFrame {
					fr := ev.Frame
					fr.Data = bytes.Clone(fr.Data)
					got = append(got, fr)
				}
			}
			if len(got) != len(c.frames) {
				t.Fatalf("cluster %d: %d frames, want %d", i, len(got), len(c.frames))
			}
			for j := range got {
				if g, w := renderFrame(&got[j]), renderFrame(&c.frames[j]); g != w {
					t.Fatalf("cluster %d frame %d: %s, want %s", i, j, g, w)
				}
			}
		}
		// Tags survive a write and a read (flattened into one Tag).
		r3 := NewReader(bytes.NewReader(in), fuzzOptions()...)
		i := 0
		for {
			ev, err := r3.Next()
			if err != nil {
				break
			}
			if ev.Kind != EventTags {
				continue
			}
			var flat []SimpleTag
			for _, tag := range ev.Tags {
				flat = append(flat, tag.SimpleTags...)
			}
			out := AppendTags(nil, flat...)
			_, _, n, err := parseHeader(out)
			if err != nil {
				t.Fatalf("rewritten tags header: %v", err)
			}
			parsed, err := parseTags(out[n:])
			if err != nil && !errors.Is(err, errTooDeep) {
				t.Fatalf("rewritten tags: %v", err)
			}
			if err == nil {
				var b strings.Builder
				for _, tag := range parsed {
					renderTags(&b, tag.SimpleTags)
				}
				if b.String() != tags[i] {
					t.Fatalf("tags %d: %s, want %s", i, b.String(), tags[i])
				}
			}
			i++
		}
	})
}

func renderFragment(f *Fragment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tc %d\n", f.Timecode)
	for i := range f.Frames {
		b.WriteString(renderFrame(&f.Frames[i]) + "\n")
	}
	renderTags(&b, f.Tags)
	b.WriteString("\n")
	renderTags(&b, f.TrailingTags)
	return b.String()
}

// FuzzFragmentReader: no panic, errors are *SyntaxError, and each fragment written with
// AppendFragment reads back the same.
func FuzzFragmentReader(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := NewFragmentReader(bytes.NewReader(in), fuzzOptions()...)
		for {
			frag, err := fr.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("error %T %v is not a *SyntaxError", err, err)
				}
				return
			}
			out, err := AppendFragment(nil, frag)
			if err != nil {
				continue
			}
			again, err := NewFragmentReader(bytes.NewReader(out)).Next()
			if err != nil {
				if errors.Is(err, errTooDeep) {
					continue // flattening tags cannot make them deeper; nesting was at the limit
				}
				t.Fatalf("rewritten fragment: %v", err)
			}
			if g, w := renderFragment(again), renderFragment(frag); g != w {
				t.Fatalf("round trip:\n%s\nwant\n%s", g, w)
			}
		}
	})
}

// FuzzFragmentReaderFrames: the frames a FragmentReader returns (read into its arenas, which it
// reuses after Release) are, in order, the frames a Reader reports for the same input.
func FuzzFragmentReaderFrames(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) { checkFragmentReaderFrames(t, in, fuzzOptions()...) })
}

// checkFragmentReaderFrames compares a FragmentReader's frames with a Reader's and returns how
// many it compared.
func checkFragmentReaderFrames(t *testing.T, in []byte, opts ...Option) int {
	t.Helper()
	var want []Frame
	rd := NewReader(bytes.NewReader(in), opts...)
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		if ev.Kind == EventFrame {
			fr := ev.Frame
			fr.Data = bytes.Clone(fr.Data)
			want = append(want, fr)
		}
	}
	fr := NewFragmentReader(bytes.NewReader(in), opts...)
	i := 0
	for {
		frag, err := fr.Next()
		if err != nil {
			return i
		}
		for _, got := range frag.Frames {
			if i >= len(want) {
				t.Fatalf("frame %d: the Reader reported only %d", i, len(want))
			}
			w := want[i]
			if got.Track != w.Track || got.Timecode != w.Timecode || got.Keyframe != w.Keyframe ||
				got.Duration != w.Duration || got.DiscardPadding != w.DiscardPadding || !bytes.Equal(got.Data, w.Data) {
				t.Fatalf("frame %d differs from the Reader's", i)
			}
			i++
		}
		frag.Release()
	}
}

// FuzzReaderBlockMemory: with WithBlockMemory (a fresh slice for some blocks, nil for others)
// and a small input buffer, the Reader returns the same events and the same error as without,
// and frames given memory have their Data in it.
func FuzzReaderBlockMemory(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		want, wantErr := renderEvents(NewReader(bytes.NewReader(in), fuzzOptions()...))
		var given [][]byte
		calls := 0
		mem := func(size int) []byte {
			calls++
			if calls%3 == 0 {
				return nil // the Reader's own buffer, as without the option
			}
			b := make([]byte, size)
			given = append(given, b)
			return b
		}
		r := NewReader(bytes.NewReader(in), append(fuzzOptions(), WithBlockMemory(mem), WithBufferSize(4<<10))...)
		got, gotErr := renderEventsCheck(t, r, &given)
		if got != want || gotErr != wantErr {
			t.Fatalf("with block memory:\n%s%s\nwant\n%s%s", got, gotErr, want, wantErr)
		}
	})
}

// renderEvents renders the frames, clusters and tags r returns, and its last error.
func renderEvents(r *Reader) (string, string) {
	return renderEventsCheck(nil, r, nil)
}

// renderEventsCheck is renderEvents that also checks, when given is not nil, that a frame read
// after a block was given memory has its Data in the last slice given.
func renderEventsCheck(t *testing.T, r *Reader, given *[][]byte) (string, string) {
	var b strings.Builder
	seen := 0
	for {
		ev, err := r.Next()
		if err != nil {
			return b.String(), err.Error()
		}
		switch ev.Kind {
		case EventCluster:
			fmt.Fprintf(&b, "cluster %d\n", ev.Timecode)
		case EventFrame:
			b.WriteString(renderFrame(&ev.Frame) + "\n")
			if given != nil && len(*given) > seen {
				seen = len(*given)
				last := (*given)[seen-1]
				if d := ev.Frame.Data; len(d) > 0 && &d[len(d)-1] != &last[len(last)-1] {
					t.Fatalf("frame at %d: its data is not in the memory given for its block", ev.Offset)
				}
			}
		case EventTags:
			for _, tag := range ev.Tags {
				renderTags(&b, tag.SimpleTags)
			}
			b.WriteString("\n")
		}
	}
}

// FuzzReaderReadAhead: a Reader that reads ahead into lent memory (ReadAhead), used the way the
// server's PutMedia parser uses it (blocks given memory at the end of a growing buffer, which is
// detached before anything else is written there, and scribbled over once given up), returns
// the same events as a plain Reader, on input that arrives in pieces of varied sizes; frames
// given memory hold their block's header and data as read.
func FuzzReaderReadAhead(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		want, wantErr := renderEvents(NewReader(bytes.NewReader(in), fuzzOptions()...))
		p := &aheadParser{t: t, arena: make([]byte, 16, 64+len(in)%(32<<10))}
		r := NewReader(&pieces{b: in}, append(fuzzOptions(), WithBlockMemory(p.mem), WithBufferSize(4<<10))...)
		p.r = r
		r.ReadAhead(p.arena)
		var b strings.Builder
		var gotErr string
		for {
			ev, err := r.Next()
			if err != nil {
				gotErr = err.Error()
				break
			}
			switch ev.Kind {
			case EventCluster:
				fmt.Fprintf(&b, "cluster %d\n", ev.Timecode)
			case EventFrame:
				b.WriteString(renderFrame(&ev.Frame) + "\n")
				p.frame(ev.Frame.Data)
			case EventClusterEnd:
				p.replace(64 + int(ev.Size)%(64<<10)) // the fragment is handed off
			case EventTags:
				for _, tag := range ev.Tags {
					renderTags(&b, tag.SimpleTags)
				}
				b.WriteString("\n")
			}
		}
		if got := b.String(); got != want || gotErr != wantErr {
			t.Fatalf("with read-ahead:\n%s%s\nwant\n%s%s", got, gotErr, want, wantErr)
		}
	})
}

// aheadParser keeps frames in arena as the server's parser does.
type aheadParser struct {
	t       *testing.T
	r       *Reader
	arena   []byte
	calls   int
	given   []byte // the last block memory given in arena, nil when none
	inPlace int    // blocks found in place
}

func (p *aheadParser) mem(size int) []byte {
	p.calls++
	switch p.calls % 7 {
	case 3:
		return nil
	case 5:
		p.given = nil
		return make([]byte, size) // not lent memory
	}
	if cap(p.arena)-len(p.arena) < size {
		p.replace(len(p.arena) + size + p.calls%100)
	}
	p.given = p.arena[len(p.arena) : len(p.arena)+size]
	return p.given
}

// frame keeps data: in place when it is in the memory given, else appended (after Detach).
func (p *aheadParser) frame(data []byte) {
	if g := p.given; g != nil && len(data) > 0 && &data[len(data)-1] == &g[len(g)-1] {
		id, size, n, err := DecodeElementHeader(g)
		if err != nil || id != IDSimpleBlock || size != int64(len(g)-n) {
			p.t.Fatalf("block memory holds header %#x %d %d %v for %d bytes", id, size, n, err, len(g))
		}
		p.arena = p.arena[:len(p.arena)+len(g)]
		p.given = nil
		p.inPlace++
		return
	}
	p.given = nil
	p.r.Detach()
	p.arena = append(p.arena, data...)
	p.r.ReadAhead(p.arena)
}

// replace gives the arena up for a new one of at least size bytes; the old one is scribbled
// over, as the buffer pool's next user would.
func (p *aheadParser) replace(size int) {
	p.r.Detach()
	old := p.arena[:cap(p.arena)]
	p.arena = append(make([]byte, 0, size+16), p.arena[:16]...)
	for i := range old {
		old[i] = 0xA5
	}
	p.r.ReadAhead(p.arena)
}

// pieces returns b in reads of varied sizes.
type pieces struct {
	b []byte
	i int
}

func (s *pieces) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	s.i++
	n := min(len(p), len(s.b), []int{1, 7, 100, 5000, 70000, 3}[s.i%6])
	copy(p, s.b[:n])
	s.b = s.b[n:]
	return n, nil
}

// FuzzStreamWriterParameterSets writes an H.264 fragment, then fragments whose CodecPrivate is
// arbitrary: StreamWriter must not fail or panic, every frame must come back from its output in
// order, and a keyframe's data may only have grown by parameter sets put before it.
func FuzzStreamWriterParameterSets(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "h264.mkv"))
	if err != nil {
		f.Fatal(err)
	}
	first, err := NewFragmentReader(bytes.NewReader(b)).Next()
	if err != nil {
		f.Fatal(err)
	}
	cp := first.Tracks[0].CodecPrivate
	f.Add(cp)
	f.Add(append(bytes.Clone(cp[:len(cp)-1]), 0x42))
	f.Add([]byte{1, 0x64, 0, 0x0b, 0xfd, 0xe1, 0, 1, 0x67, 1, 0x68})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, cp []byte) {
		var out bytes.Buffer
		sw := NewStreamWriter(&out)
		second := *first
		second.Tracks = cloneTracks(first.Tracks)
		second.Tracks[0].CodecPrivate = cp
		second.Timecode += 1000
		second.Frames = nil
		for _, fr := range first.Frames {
			fr.Timecode += 1000
			second.Frames = append(second.Frames, fr)
		}
		for _, frag := range []*Fragment{first, &second, first} {
			if err := sw.WriteFragment(frag); err != nil {
				t.Fatal(err)
			}
		}
		var got []Frame
		r := NewReader(bytes.NewReader(out.Bytes()))
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("reading the output back: %v", err)
			}
			if ev.Kind == EventFrame {
				got = append(got, Frame{Keyframe: ev.Frame.Keyframe, Data: bytes.Clone(ev.Frame.Data)})
			}
		}
		if len(got) != 3*len(first.Frames) {
			t.Fatalf("%d frames back, want %d", len(got), 3*len(first.Frames))
		}
		for i, g := range got {
			want := first.Frames[i%len(first.Frames)]
			if !bytes.HasSuffix(g.Data, want.Data) || (!want.Keyframe && len(g.Data) != len(want.Data)) {
				t.Fatalf("frame %d: %d bytes, want the %d of the input (with parameter sets before a keyframe's)", i, len(g.Data), len(want.Data))
			}
		}
	})
}
