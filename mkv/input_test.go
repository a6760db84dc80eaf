package mkv

import (
	"bytes"
	"testing"
)

// TestReaderReadAheadInPlace reads fragments of large frames the way the server's PutMedia
// parser does (ReadAhead into a buffer per fragment, block memory at its end): all but the first
// block of each fragment are found in place, every frame's bytes are right, and the input is
// read in a few large reads rather than one or two per frame.
func TestReaderReadAheadInPlace(t *testing.T) {
	const fragments, perFragment, frameSize = 3, 40, 30_000
	var in []byte
	var want [][]byte
	for f := range fragments {
		frag := Fragment{DocType: "matroska", TimecodeScale: 1_000_000, Tracks: testTracks[:1], Timecode: int64(f) * 2000}
		for i := range perFragment {
			data := bytes.Repeat([]byte{byte(f*perFragment + i)}, frameSize-i) // sizes vary
			frag.Frames = append(frag.Frames, Frame{Track: testTracks[0].Number, Timecode: frag.Timecode + int64(i)*33, Keyframe: i == 0, Data: data})
			want = append(want, data)
		}
		b, err := AppendFragment(nil, &frag)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, b...)
	}
	src := &countingReader{r: bytes.NewReader(in)}
	p := &aheadParser{t: t, arena: make([]byte, 16, 64<<10)}
	r := NewReader(src, WithBlockMemory(p.mem), WithBufferSize(16<<10))
	p.r = r
	r.ReadAhead(p.arena)
	var got, spills, givenBack int
	held := false // a spill: input read past a fragment, more than the Reader's buffer holds
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		if now := r.in.spill != nil; now != held {
			if now {
				spills++
			} else if len(r.in.own) == 16<<10 {
				givenBack++
			}
			held = now
		}
		switch ev.Kind {
		case EventFrame:
			if got >= len(want) || !bytes.Equal(ev.Frame.Data, want[got]) {
				t.Fatalf("frame %d: %d bytes, not as written", got, len(ev.Frame.Data))
			}
			got++
			p.frame(ev.Frame.Data)
		case EventClusterEnd:
			p.replace(1 << 20)
		}
	}
	if got != len(want) {
		t.Fatalf("%d frames, want %d", got, len(want))
	}
	// aheadParser refuses block memory to every third and fifth call of seven; of the others, all
	// but a fragment's first block (read before the fragment's buffer was lent) are in place.
	given := 0
	for c := 1; c <= p.calls; c++ {
		if c%7 != 3 && c%7 != 5 {
			given++
		}
	}
	if p.inPlace < given-fragments-1 {
		t.Errorf("%d of %d blocks given memory were in place", p.inPlace, given)
	}
	if max := len(in)/(64<<10) + 4*fragments; src.reads > max {
		t.Errorf("%d reads of %d bytes, want at most %d", src.reads, len(in), max)
	}
	// The reads run past each fragment's end (the input is there); the Reader takes that over
	// in a pool buffer and gives it back once drained, keeping its own size in between.
	if spills < fragments-1 || givenBack < fragments-1 {
		t.Errorf("%d spills, %d given back: want one of each after every fragment but the last", spills, givenBack)
	}
	t.Logf("%d frames, %d in place, %d reads of %d bytes, %d spills", got, p.inPlace, src.reads, len(in), spills)
}

type countingReader struct {
	r     *bytes.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}
