package mkv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// chunk returns a GetMedia-style chunk for fragment n.
func chunk(t testing.TB, n int) []byte {
	t.Helper()
	tc := int64(1000 * n)
	b, err := AppendFragment(nil, &Fragment{
		Tracks:   testTracks,
		Tags:     []SimpleTag{{Name: TagFragmentNumber, Value: fmt.Sprint(n)}, {Name: TagServerTimestamp, Value: fmt.Sprintf("%d.000", n)}},
		Timecode: tc,
		Frames: []Frame{
			{Track: 1, Timecode: tc, Keyframe: true, Data: []byte{byte(n), 1}},
			{Track: 1, Timecode: tc + 40, Data: []byte{byte(n), 2}},
		},
		TrailingTags: []SimpleTag{{Name: TagMillisBehindNow, Value: "5"}, {Name: TagContinuationToken, Value: fmt.Sprint(n)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// summary renders a fragment compactly for table tests.
func summary(f *Fragment) string {
	var s []string
	s = append(s, fmt.Sprintf("tc=%d", f.Timecode))
	for _, fr := range f.Frames {
		s = append(s, fmt.Sprintf("%d@%d:%x", fr.Track, fr.Timecode, fr.Data))
	}
	tagNames := func(prefix string, tags []SimpleTag) {
		for _, t := range tags {
			s = append(s, prefix+t.Name+"="+t.Value)
		}
	}
	tagNames("lead:", f.Tags)
	tagNames("trail:", f.TrailingTags)
	return strings.Join(s, " ")
}

func TestFragmentReader(t *testing.T) {
	t.Parallel()
	d := cat(docStart(true), segmentHead())
	tags := func(kv ...string) []byte {
		var st []SimpleTag
		for i := 0; i < len(kv); i += 2 {
			st = append(st, SimpleTag{Name: kv[i], Value: kv[i+1]})
		}
		return AppendTags(nil, st...)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []string
		wantErr error
	}{
		{name: "empty", in: nil},
		{name: "kvs chunks", in: cat(chunk(t, 1), chunk(t, 2)), want: []string{
			"tc=1000 1@1000:0101 1@1040:0102 lead:AWS_KINESISVIDEO_FRAGMENT_NUMBER=1 lead:AWS_KINESISVIDEO_SERVER_TIMESTAMP=1.000 trail:AWS_KINESISVIDEO_MILLIS_BEHIND_NOW=5 trail:AWS_KINESISVIDEO_CONTINUATION_TOKEN=1",
			"tc=2000 1@2000:0201 1@2040:0202 lead:AWS_KINESISVIDEO_FRAGMENT_NUMBER=2 lead:AWS_KINESISVIDEO_SERVER_TIMESTAMP=2.000 trail:AWS_KINESISVIDEO_MILLIS_BEHIND_NOW=5 trail:AWS_KINESISVIDEO_CONTINUATION_TOKEN=2",
		}},
		{name: "producer stream, unknown-size clusters", in: cat(d, tags("p", "0"),
			unknown(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, 1)), tags("a", "1"), tags("b", "2"),
			unknown(IDCluster, uintElem(IDTimecode, 40), simpleBlock(1, 0, true, 2)),
			unknown(IDCluster, uintElem(IDTimecode, 80), simpleBlock(1, 0, true, 3)), tags("c", "3")),
			want: []string{"tc=0 1@0:01 lead:p=0 trail:a=1 trail:b=2", "tc=40 1@40:02", "tc=80 1@80:03 trail:c=3"}},
		{name: "end of fragment delivers, later tags lead", in: cat(d,
			unknown(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, 1)), tags(TagEndOfFragment, ""), tags("x", "y"),
			unknown(IDCluster, uintElem(IDTimecode, 40), simpleBlock(1, 0, true, 2))),
			want: []string{"tc=0 1@0:01 trail:AWS_KINESISVIDEO_END_OF_FRAGMENT=", "tc=40 1@40:02 lead:x=y"}},
		{name: "error chunk", in: cat(chunk(t, 1), d, tags(TagFragmentNumber, "9", TagErrorID, "4000", TagErrorCode, "not found")),
			want: []string{
				"tc=1000 1@1000:0101 1@1040:0102 lead:AWS_KINESISVIDEO_FRAGMENT_NUMBER=1 lead:AWS_KINESISVIDEO_SERVER_TIMESTAMP=1.000 trail:AWS_KINESISVIDEO_MILLIS_BEHIND_NOW=5 trail:AWS_KINESISVIDEO_CONTINUATION_TOKEN=1",
				"tc=0 lead:AWS_KINESISVIDEO_FRAGMENT_NUMBER=9 lead:AWS_KINESISVIDEO_ERROR_ID=4000 lead:AWS_KINESISVIDEO_ERROR_CODE=not found"}},
		{name: "tags-only document then chunk", in: cat(d, tags("only", "1"), chunk(t, 3)), want: []string{
			"tc=0 lead:only=1",
			"tc=3000 1@3000:0301 1@3040:0302 lead:AWS_KINESISVIDEO_FRAGMENT_NUMBER=3 lead:AWS_KINESISVIDEO_SERVER_TIMESTAMP=3.000 trail:AWS_KINESISVIDEO_MILLIS_BEHIND_NOW=5 trail:AWS_KINESISVIDEO_CONTINUATION_TOKEN=3",
		}},
		{name: "truncated", in: chunk(t, 1)[:len(chunk(t, 1))-40], wantErr: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := NewFragmentReader(bytes.NewReader(tc.in))
			var got []string
			var err error
			for {
				var f *Fragment
				f, err = fr.Next()
				if err != nil {
					break
				}
				got = append(got, summary(f))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.wantErr == nil && err != io.EOF || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if _, err2 := fr.Next(); err2 != err {
				t.Errorf("error not sticky: %v then %v", err, err2)
			}
		})
	}
}

// A GetMedia chunk is delivered as soon as its continuation-token Tags arrive, without waiting
// for the next chunk (which, live, only comes with the next fragment).
func TestFragmentReaderDeliversWithoutNextChunk(t *testing.T) {
	t.Parallel()
	fr := NewFragmentReader(&stallReader{data: chunk(t, 1)})
	f, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Tag(TagContinuationToken); v != "1" || len(f.Frames) != 2 {
		t.Errorf("fragment %s", summary(f))
	}
	if _, err := fr.Next(); !errors.Is(err, errStalled) {
		t.Errorf("next: %v", err)
	}
}

func TestFragmentReaderFramesAreOwned(t *testing.T) {
	t.Parallel()
	fr := NewFragmentReader(bytes.NewReader(cat(chunk(t, 1), chunk(t, 2))))
	f1, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	before := summary(f1)
	if _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if summary(f1) != before {
		t.Errorf("first fragment changed: %s", summary(f1))
	}
	if f1.DocType != "matroska" || f1.TimecodeScale != DefaultTimecodeScale || !reflect.DeepEqual(f1.Tracks, testTracks) {
		t.Errorf("segment context %q %d %+v", f1.DocType, f1.TimecodeScale, f1.Tracks)
	}
}

func TestFragmentReaderMaxSize(t *testing.T) {
	t.Parallel()
	in := cat(chunk(t, 1), docStart(true), segmentHead(), elem(IDCluster, uintElem(IDTimecode, 0),
		simpleBlock(1, 0, true, make([]byte, 600)...), simpleBlock(1, 1, true, make([]byte, 600)...)))
	fr := NewFragmentReader(bytes.NewReader(in), WithMaxFragmentSize(1000))
	if _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	_, err := fr.Next()
	var se *SyntaxError
	if !errors.Is(err, ErrElementTooLarge) || !errors.As(err, &se) || se.ID != IDCluster {
		t.Errorf("err = %v", err)
	}
	// Leading tags count too.
	many := cat(docStart(true))
	for i := 0; i < 100; i++ {
		many = append(many, AppendTags(nil, SimpleTag{Name: "n", Value: strings.Repeat("v", 20)})...)
	}
	if _, err := NewFragmentReader(bytes.NewReader(many), WithMaxFragmentSize(1000)).Next(); !errors.Is(err, ErrElementTooLarge) {
		t.Errorf("tags: err = %v", err)
	}
}

func TestFragmentTag(t *testing.T) {
	t.Parallel()
	f := &Fragment{
		Tags:         []SimpleTag{{Name: "A", Value: "lead", Children: []SimpleTag{{Name: "N", Value: "nested"}}}},
		TrailingTags: []SimpleTag{{Name: "A", Value: "trail"}, {Name: "T", Value: "t"}},
	}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"A", "lead", true}, {"N", "nested", true}, {"T", "t", true}, {"missing", "", false},
	} {
		if v, ok := f.Tag(tc.name); v != tc.want || ok != tc.ok {
			t.Errorf("Tag(%q) = %q, %v", tc.name, v, ok)
		}
	}
}

func TestFragmentDuration(t *testing.T) {
	t.Parallel()
	video := Track{Number: 1, DefaultDuration: 40 * time.Millisecond}
	for _, tc := range []struct {
		name string
		f    Fragment
		want int64
	}{
		{"empty", Fragment{}, 0},
		{"block durations", Fragment{Frames: []Frame{{Track: 1, Timecode: 100, Duration: 40}, {Track: 1, Timecode: 140, Duration: 50}}}, 90},
		{"default duration", Fragment{Tracks: []Track{video}, Frames: []Frame{{Track: 1, Timecode: 100}, {Track: 1, Timecode: 140}}}, 80},
		{"default duration, other scale", Fragment{TimecodeScale: 100_000, Tracks: []Track{video}, Frames: []Frame{{Track: 1, Timecode: 0}}}, 400},
		{"mean spacing, b-frames", Fragment{Frames: []Frame{{Track: 1, Timecode: 0}, {Track: 1, Timecode: 120}, {Track: 1, Timecode: 40}, {Track: 1, Timecode: 80}}}, 160},
		{"single frame", Fragment{Frames: []Frame{{Track: 3, Timecode: 7}}}, 0},
		{"two tracks", Fragment{Tracks: []Track{video}, Frames: []Frame{{Track: 2, Timecode: 0, Duration: 21}, {Track: 1, Timecode: 10}, {Track: 2, Timecode: 21, Duration: 21}}}, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Duration(); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
	// DurationTo: the other tracks' frames count until they start; no frame of the track, or
	// track 0, is Duration.
	av := Fragment{Tracks: []Track{video}, Frames: []Frame{{Track: 2, Timecode: 0, Duration: 21}, {Track: 1, Timecode: 10},
		{Track: 1, Timecode: 50}, {Track: 2, Timecode: 80, Duration: 21}}}
	for _, tc := range []struct {
		track uint64
		want  int64
	}{{1, 90}, {0, 101}, {3, 101}} {
		if got := av.DurationTo(tc.track); got != tc.want {
			t.Errorf("DurationTo(%d): got %d, want %d", tc.track, got, tc.want)
		}
	}
}

// TestFragmentReaderMatchesReader: the frames of a FragmentReader (copied into arenas sized from
// the cluster, or grown for unknown-size clusters that outgrow the previous fragment, and reused
// after Release) are the Reader's frames, for known-size clusters (GetMedia chunks), unknown-size
// ones, BlockGroups and the clips in testdata.
func TestFragmentReaderMatchesReader(t *testing.T) {
	t.Parallel()
	frames := func(tc int64, sizes ...int) []Frame {
		var out []Frame
		for i, n := range sizes {
			f := Frame{Track: 1, Timecode: tc + int64(40*i), Keyframe: i == 0, Data: bytes.Repeat([]byte{byte(i + 1)}, n)}
			if i%3 == 2 {
				f.Duration = 40 // a BlockGroup
			}
			out = append(out, f)
		}
		return out
	}
	known := []byte(nil)
	for n := range 3 {
		b, err := AppendFragment(nil, &Fragment{Tracks: testTracks, Timecode: int64(1000 * n),
			Frames: frames(int64(1000*n), 100_000, 3000, 5000, 70_000)})
		if err != nil {
			t.Fatal(err)
		}
		known = append(known, b...)
	}
	unknown := cat(docStart(true), segmentHead())
	for n, sizes := range [][]int{{1000, 200}, {300_000, 50, 60}, {10, 10}, {500_000}} {
		tc := int64(1000 * n)
		cl, err := AppendCluster(nil, tc, frames(tc, sizes...))
		if err != nil {
			t.Fatal(err)
		}
		// Same children, unknown size: skip the known size header (ID + 8-byte size).
		unknown = AppendElementHeader(unknown, IDCluster, -1)
		unknown = append(unknown, cl[len(AppendElementHeader(nil, IDCluster, int64(len(cl)))):]...)
	}
	inputs := map[string][]byte{"known-size clusters": known, "unknown-size clusters": unknown}
	for _, name := range []string{"h264.mkv", "h264_aac.mkv", "webm_vp8.webm", "h265.mkv"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		inputs[name] = b
	}
	for name, in := range inputs {
		if n := checkFragmentReaderFrames(t, in); n < 4 {
			t.Errorf("%s: %d frames compared", name, n)
		}
	}
}
