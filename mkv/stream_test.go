package mkv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// videoFragment returns n frames 40 ms apart from tc on track 1, keyframe first.
func videoFragment(tracks []Track, tc int64, n int) *Fragment {
	f := &Fragment{Tracks: tracks, Timecode: tc, Tags: []SimpleTag{{Name: TagFragmentNumber, Value: "1"}}}
	for i := 0; i < n; i++ {
		f.Frames = append(f.Frames, Frame{Track: 1, Timecode: tc + int64(i)*40, Keyframe: i == 0, Data: []byte{byte(i)}})
	}
	return f
}

// streamEvents reads the StreamWriter output back: segment starts, cluster timecodes and first
// frame timecodes.
func streamEvents(t *testing.T, b []byte) string {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	var s []string
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return strings.Join(s, " ")
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case EventSegment:
			s = append(s, "S")
		case EventCluster:
			s = append(s, fmt.Sprintf("C%d", ev.Timecode))
		case EventTags:
			s = append(s, "T")
		}
	}
}

type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

func TestStreamWriter(t *testing.T) {
	t.Parallel()
	other := append([]Track(nil), testTracks...)
	other[0].CodecPrivate = []byte{9, 9}
	const epoch = 1_600_000_000_000
	for _, tc := range []struct {
		name  string
		frags []*Fragment
		want  string
	}{
		{"rebase to zero", []*Fragment{videoFragment(testTracks, epoch, 25), videoFragment(testTracks, epoch+1000, 25)}, "S C0 C1000"},
		{"gap kept", []*Fragment{videoFragment(testTracks, epoch, 25), videoFragment(testTracks, epoch+5000, 25)}, "S C0 C5000"},
		{"producer restart", []*Fragment{videoFragment(testTracks, epoch, 25), videoFragment(testTracks, 0, 25), videoFragment(testTracks, 1000, 25)}, "S C0 C1000 C2000"},
		{"overlap", []*Fragment{videoFragment(testTracks, epoch, 25), videoFragment(testTracks, epoch+500, 25)}, "S C0 C1000"},
		{"track change starts a segment", []*Fragment{videoFragment(testTracks, epoch, 25), videoFragment(other, epoch+1000, 25), videoFragment(other, epoch+2000, 25)}, "S C0 S C1000 C2000"},
		{"scale change", []*Fragment{videoFragment(testTracks, epoch, 25), {TimecodeScale: 100_000, Tracks: testTracks, Timecode: (epoch + 1000) * 10,
			Frames: []Frame{{Track: 1, Timecode: (epoch + 1000) * 10, Keyframe: true}}}}, "S C0 S C10000"},
		{"long fragment split into clusters", []*Fragment{videoFragment(testTracks, epoch, 1000)}, "S C0 C32800"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w countingWriter
			s := NewStreamWriter(&w)
			for _, f := range tc.frags {
				if err := s.WriteFragment(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if w.writes != len(tc.frags) {
				t.Errorf("%d writes for %d fragments", w.writes, len(tc.frags))
			}
			if got := streamEvents(t, w.Bytes()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStreamWriterFramesIntact(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := NewStreamWriter(&buf)
	in := roundTripFragment
	if err := s.WriteFragment(&in); err != nil {
		t.Fatal(err)
	}
	fr := NewFragmentReader(bytes.NewReader(buf.Bytes()))
	var got []Frame
	for {
		f, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Tags)+len(f.TrailingTags) != 0 {
			t.Errorf("KVS tags written to the player stream")
		}
		got = append(got, f.Frames...)
	}
	if len(got) != len(in.Frames) {
		t.Fatalf("%d frames, want %d", len(got), len(in.Frames))
	}
	base := in.Frames[len(in.Frames)-1].Timecode // the earliest
	for i, f := range got {
		w := in.Frames[i]
		if f.Track != w.Track || f.Timecode != w.Timecode-base || f.Keyframe != w.Keyframe || f.Duration != w.Duration || !bytes.Equal(f.Data, w.Data) {
			t.Errorf("frame %d: %+v, want %+v", i, f, w)
		}
	}
}

type failWriter struct{ n int }

var errWrite = errors.New("disk full")

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	if f.n > 1 {
		return 0, errWrite
	}
	return len(p), nil
}

func TestStreamWriterErrors(t *testing.T) {
	t.Parallel()
	s := NewStreamWriter(&failWriter{})
	if err := s.WriteFragment(videoFragment(testTracks, 0, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFragment(videoFragment(testTracks, 100, 2)); !errors.Is(err, errWrite) {
		t.Errorf("err %v", err)
	}
	if err := s.WriteFragment(videoFragment(testTracks, 200, 2)); !errors.Is(err, errWrite) {
		t.Errorf("not sticky: %v", err)
	}
	if err := s.Close(); !errors.Is(err, errWrite) {
		t.Errorf("close: %v", err)
	}
	s = NewStreamWriter(io.Discard)
	_ = s.Close()
	if err := s.WriteFragment(videoFragment(testTracks, 0, 2)); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}
