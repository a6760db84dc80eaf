package mkv

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"
)

func TestAppendElementHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		id   uint32
		size int64
		want string
	}{
		{"1-byte id, 0", IDSimpleBlock, 0, "a380"},
		{"1-byte id, 126", IDSimpleBlock, 126, "a3fe"},
		{"127 needs 2 bytes", IDSimpleBlock, 127, "a3407f"},
		{"2-byte id", IDTagName, 300, "45a3412c"},
		{"3-byte id", IDTimecodeScale, 1, "2ad7b181"},
		{"4-byte id", IDCluster, 16383, "1f43b675203fff"},
		{"unknown", IDSegment, -1, "1853806701ffffffffffffff"},
		{"largest known", IDCluster, 1<<56 - 2, "1f43b67501fffffffffffffe"},
		{"too large is unknown", IDCluster, 1<<56 - 1, "1f43b67501ffffffffffffff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(AppendElementHeader(nil, tc.id, tc.size)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestAppendVoidHeader checks that a Void element takes exactly the bytes asked for, and that
// the reader skips it between the chunks of an answer.
func TestAppendVoidHeader(t *testing.T) {
	t.Parallel()
	for _, total := range []int64{VoidHeaderSize, VoidHeaderSize + 1, 127 + VoidHeaderSize, 5 << 20} {
		b := AppendVoidHeader(nil, total)
		id, size, n, err := DecodeElementHeader(b)
		if err != nil || id != IDVoid || n != VoidHeaderSize || int64(n)+size != total {
			t.Errorf("total %d: id %#x, size %d, header %d bytes, %v", total, id, size, n, err)
		}
	}
	one, err := AppendFragment(nil, &roundTripFragment)
	if err != nil {
		t.Fatal(err)
	}
	in := AppendVoidHeader(append([]byte(nil), one...), 100)
	in = append(in, make([]byte, 100-VoidHeaderSize)...)
	in = append(in, one...)
	fr := NewFragmentReader(bytes.NewReader(in))
	for i := range 2 {
		got, err := fr.Next()
		if err != nil || len(got.Frames) != len(roundTripFragment.Frames) || !bytes.Equal(got.Frames[0].Data, []byte("key")) {
			t.Fatalf("fragment %d after the Void: %v, %v", i, got, err)
		}
	}
	if _, err := fr.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the two fragments: %v, want io.EOF", err)
	}
}

func TestAppendValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"uint 0", AppendUint(nil, IDTrackNumber, 0), "d78100"},
		{"uint 255", AppendUint(nil, IDTrackNumber, 255), "d781ff"},
		{"uint 256", AppendUint(nil, IDTrackNumber, 256), "d7820100"},
		{"uint max", AppendUint(nil, IDTrackNumber, math.MaxUint64), "d788ffffffffffffffff"},
		{"int -1", AppendInt(nil, IDReferenceBlock, -1), "fb81ff"},
		{"int -128", AppendInt(nil, IDReferenceBlock, -128), "fb8180"},
		{"int -129", AppendInt(nil, IDReferenceBlock, -129), "fb82ff7f"},
		{"int 128", AppendInt(nil, IDReferenceBlock, 128), "fb820080"},
		{"int min", AppendInt(nil, IDReferenceBlock, math.MinInt64), "fb888000000000000000"},
		{"float", AppendFloat(nil, IDSamplingFreq, 48000), "b58840e7700000000000"},
		{"string", AppendString(nil, IDCodecID, "A_AAC"), "8685415f414143"},
		{"binary", AppendBinary(nil, IDCodecPrivate, []byte{1, 2}), "63a2820102"},
		{"segment start", AppendSegmentStart(nil), "1853806701ffffffffffffff"},
		{"tags", AppendTags(nil, SimpleTag{Name: "A", Value: "b"}),
			"1254c3678e73738b67c88845a3814144878162"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(tc.got); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAppendClusterRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		cluster  int64
		frame    int64
		wantFail bool
	}{
		{"max", 100_000, 100_000 + math.MaxInt16, false},
		{"min", 100_000, 100_000 + math.MinInt16, false},
		{"above", 100_000, 100_000 + math.MaxInt16 + 1, true},
		{"below", 100_000, 100_000 + math.MinInt16 - 1, true},
		{"far below", math.MaxInt64, math.MinInt64, true},
		{"far above", 0, math.MaxInt64, true},
		{"negative cluster", -1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte("prefix")
			out, err := AppendCluster(in, tc.cluster, []Frame{{Track: 1, Timecode: tc.frame, Data: []byte{1}}})
			if tc.wantFail {
				if !errors.Is(err, ErrTimecodeRange) || string(out) != "prefix" {
					t.Errorf("err = %v, out %q", err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// roundTripFragment exercises everything the writer can express.
var roundTripFragment = Fragment{
	DocType:       "matroska",
	TimecodeScale: 1_000_000,
	Tracks: append(append([]Track(nil), testTracks...), Track{Number: 300, UID: 1 << 60, Type: 17, CodecID: "S_TEXT/UTF8",
		Name: "subs", CodecDelay: 5 * time.Millisecond, BitDepth: 16}),
	Tags: []SimpleTag{
		{Name: TagFragmentNumber, Value: "91343852333181432392682062607743920146159169392"},
		{Name: TagServerTimestamp, Value: "1511852109.126"},
		{Name: "NESTED", Value: "outer", Children: []SimpleTag{{Name: "INNER", Value: "x", Children: []SimpleTag{{Name: "DEEP", Binary: []byte{0, 1}}}}}},
		{Name: "EMPTY_BINARY", Binary: []byte{}},
	},
	Timecode: 1_511_852_109_126,
	Frames: []Frame{
		{Track: 1, Timecode: 1_511_852_109_126, Keyframe: true, Data: []byte("key")},
		{Track: 2, Timecode: 1_511_852_109_120, Keyframe: true, Duration: 21, Data: []byte("audio")},
		{Track: 1, Timecode: 1_511_852_109_166, Data: []byte("delta")},
		{Track: 1, Timecode: 1_511_852_109_206, Duration: 40, Data: []byte("delta with duration")},
		{Track: 2, Timecode: 1_511_852_109_099, Keyframe: true, DiscardPadding: -21_333_333, Data: []byte("priming")},
		{Track: 2, Timecode: 1_511_852_109_141, Keyframe: true, Duration: 21, DiscardPadding: 500_000, Data: []byte("end")},
		{Track: 300, Timecode: 1_511_852_109_126 + math.MaxInt16, Keyframe: true, Data: []byte{}},
		{Track: 200, Timecode: 1_511_852_109_126 + math.MinInt16, Keyframe: true, Data: bytes.Repeat([]byte{7}, 70_000)},
	},
	TrailingTags: []SimpleTag{
		{Name: TagMillisBehindNow, Value: "15858"},
		{Name: TagContinuationToken, Value: "91343852333181432392682062607743920146159169392"},
	},
}

func TestFragmentRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := AppendFragment(nil, &roundTripFragment)
	if err != nil {
		t.Fatal(err)
	}
	fr := NewFragmentReader(bytes.NewReader(b))
	got, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got.arena == nil {
		t.Error("a fragment from FragmentReader has no arena to Release")
	}
	got.arena = nil // memory bookkeeping, not content
	if !reflect.DeepEqual(got, &roundTripFragment) {
		t.Errorf("got\n%+v\nwant\n%+v", got, &roundTripFragment)
	}
	data := got.Frames[0].Data
	got.arena = data[:0:cap(data)]
	got.Release()
	if got.Frames != nil || got.arena != nil {
		t.Error("Release left frames behind")
	}
	got.Release() // twice is fine
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("second Next: %v", err)
	}
}

// ebml-go, an independent parser, reads what the writer writes, Tags included.
func TestWriterCrossCheckEBMLGo(t *testing.T) {
	t.Parallel()
	b, err := AppendFragment(nil, &roundTripFragment)
	if err != nil {
		t.Fatal(err)
	}
	type simpleTag struct {
		TagName   string      `ebml:"TagName"`
		TagString string      `ebml:"TagString"`
		TagBinary []byte      `ebml:"TagBinary"`
		SimpleTag []simpleTag `ebml:"SimpleTag"`
	}
	type tags struct {
		Tag []struct {
			SimpleTag []simpleTag `ebml:"SimpleTag"`
		} `ebml:"Tag"`
	}
	var doc struct {
		Header  webm.EBMLHeader `ebml:"EBML"`
		Segment struct {
			Info    webm.Info      `ebml:"Info"`
			Tracks  webm.Tracks    `ebml:"Tracks"`
			Tags    []tags         `ebml:"Tags"`
			Cluster []webm.Cluster `ebml:"Cluster"`
		} `ebml:"Segment"`
	}
	if err := ebml.Unmarshal(bytes.NewReader(b), &doc); err != nil {
		t.Fatal(err)
	}
	seg := doc.Segment
	if doc.Header.DocType != "matroska" || seg.Info.TimecodeScale != 1_000_000 || len(seg.Tracks.TrackEntry) != 3 {
		t.Errorf("header %+v info %+v tracks %d", doc.Header, seg.Info, len(seg.Tracks.TrackEntry))
	}
	if e := seg.Tracks.TrackEntry[1]; e.CodecID != "A_AAC" || e.Audio.SamplingFrequency != 48000 || !bytes.Equal(e.CodecPrivate, []byte{0x11, 0x90}) {
		t.Errorf("audio track %+v", e)
	}
	if len(seg.Tags) != 2 || len(seg.Tags[0].Tag) != 1 || len(seg.Tags[0].Tag[0].SimpleTag) != 4 {
		t.Fatalf("tags %+v", seg.Tags)
	}
	nested := seg.Tags[0].Tag[0].SimpleTag[2]
	if nested.TagName != "NESTED" || nested.SimpleTag[0].SimpleTag[0].TagName != "DEEP" || !bytes.Equal(nested.SimpleTag[0].SimpleTag[0].TagBinary, []byte{0, 1}) {
		t.Errorf("nested %+v", nested)
	}
	if v := seg.Tags[1].Tag[0].SimpleTag[0]; v.TagName != TagMillisBehindNow || v.TagString != "15858" {
		t.Errorf("trailing %+v", v)
	}
	if len(seg.Cluster) != 1 {
		t.Fatalf("%d clusters", len(seg.Cluster))
	}
	c := seg.Cluster[0]
	if c.Timecode != 1_511_852_109_126 || len(c.SimpleBlock) != 4 || len(c.BlockGroup) != 4 {
		t.Fatalf("cluster timecode %d, %d simple blocks, %d groups", c.Timecode, len(c.SimpleBlock), len(c.BlockGroup))
	}
	if g := c.BlockGroup[1]; g.BlockDuration != 40 || g.ReferenceBlock == 0 || string(g.Block.Data[0]) != "delta with duration" {
		t.Errorf("block group %+v", g)
	}
	// ebml-go's BlockGroup has no DiscardPadding field: read the clusters again with one.
	var pads struct {
		Segment struct {
			Cluster []struct {
				BlockGroup []struct {
					DiscardPadding int64 `ebml:"DiscardPadding"`
				} `ebml:"BlockGroup"`
			} `ebml:"Cluster"`
		} `ebml:"Segment"`
	}
	if err := ebml.Unmarshal(bytes.NewReader(b), &pads, ebml.WithIgnoreUnknown(true)); err != nil {
		t.Fatal(err)
	}
	if g := pads.Segment.Cluster[0].BlockGroup; len(g) != 4 || g[2].DiscardPadding != -21_333_333 || g[3].DiscardPadding != 500_000 || g[0].DiscardPadding != 0 {
		t.Errorf("discard padding %+v", g)
	}
	if g := c.BlockGroup[2]; g.ReferenceBlock != 0 || g.BlockDuration != 0 || g.Block.Timecode != -27 || string(g.Block.Data[0]) != "priming" {
		t.Errorf("priming block group %+v", g)
	}
	if s := c.SimpleBlock[3]; s.TrackNumber != 200 || s.Timecode != math.MinInt16 || !s.Keyframe || len(s.Data[0]) != 70_000 {
		t.Errorf("last simple block track %d tc %d key %v", s.TrackNumber, s.Timecode, s.Keyframe)
	}
}

func TestAppendFragmentAllocs(t *testing.T) {
	f := roundTripFragment
	buf := make([]byte, 0, 1<<20)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = AppendFragment(buf[:0], &f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestAppendFragmentError(t *testing.T) {
	t.Parallel()
	f := Fragment{Timecode: 0, Frames: []Frame{{Timecode: 1 << 20}}}
	b, err := AppendFragment([]byte("x"), &f)
	if !errors.Is(err, ErrTimecodeRange) || string(b) != "x" {
		t.Errorf("err %v, b %q", err, b)
	}
}

func TestAppendEBMLHeaderDocTypes(t *testing.T) {
	t.Parallel()
	for _, docType := range []string{"", "matroska", "webm"} {
		in := AppendEBMLHeader(nil, docType)
		got, err := readAll(in)
		want := docType
		if want == "" {
			want = "matroska"
		}
		if err != io.EOF || len(got) != 1 || got[0] != "EBMLHeader "+want {
			t.Errorf("%q: %v %v", docType, got, err)
		}
	}
}

// TestAppendClusterByFrame: a cluster built frame by frame (AppendClusterFrame, then
// AppendClusterHeader before the frames) is byte for byte AppendCluster's, SimpleBlocks and
// BlockGroups alike; a frame out of the cluster's int16 range is refused and b left as it was.
func TestAppendClusterByFrame(t *testing.T) {
	t.Parallel()
	frames := []Frame{
		{Track: 1, Timecode: 5000, Keyframe: true, Data: bytes.Repeat([]byte{7}, 70_000)},
		{Track: 2, Timecode: 4990, Duration: 21, Data: []byte{1, 2, 3}},
		{Track: 1, Timecode: 5033, Data: []byte{4}},
		{Track: 200, Timecode: 5040, DiscardPadding: 9, Keyframe: true, Data: []byte{5, 6}},
	}
	want, err := AppendCluster(nil, 5000, frames)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for i := range frames {
		n := len(body)
		if body, err = AppendClusterFrame(body, 5000, &frames[i]); err != nil {
			t.Fatal(err)
		}
		if len(body)-n > FrameElementSize(&frames[i]) {
			t.Errorf("frame %d: %d bytes, FrameElementSize says %d", i, len(body)-n, FrameElementSize(&frames[i]))
		}
	}
	got := AppendClusterHeader(nil, 5000, int64(len(body)))
	if len(got) > ClusterHeaderSize {
		t.Errorf("cluster header of %d bytes, ClusterHeaderSize %d", len(got), ClusterHeaderSize)
	}
	if got = append(got, body...); !bytes.Equal(got, want) {
		t.Errorf("built frame by frame:\n%x\nAppendCluster:\n%x", got[:64], want[:64])
	}
	if out, err := AppendClusterFrame([]byte("x"), 5000, &Frame{Track: 1, Timecode: 5000 + math.MaxInt16 + 1}); !errors.Is(err, ErrTimecodeRange) || string(out) != "x" {
		t.Errorf("out of range: %q, %v", out, err)
	}
}

func TestTagValue(t *testing.T) {
	t.Parallel()
	tags := AppendTags(nil, SimpleTag{Name: "A", Value: "1"}, SimpleTag{Name: TagFragmentNumber, Value: "42",
		Children: []SimpleTag{{Name: "NESTED", Value: "n"}}})
	_, size, n, err := DecodeElementHeader(tags)
	if err != nil || int(size) != len(tags)-n {
		t.Fatalf("header: size %d, n %d, %v", size, n, err)
	}
	data := tags[n:]
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{{TagFragmentNumber, "42", true}, {"A", "1", true}, {"NESTED", "n", true}, {"MISSING", "", false}} {
		if v, ok := TagValue(data, tc.name); v != tc.want || ok != tc.ok {
			t.Errorf("%s: %q, %v", tc.name, v, ok)
		}
	}
	if _, ok := TagValue(data[:len(data)-1], "A"); ok {
		t.Error("truncated Tags: found a value")
	}
	if _, _, _, err := DecodeElementHeader(tags[:2]); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short header: %v", err)
	}
}
