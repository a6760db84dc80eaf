package mkv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Builders for hand-made inputs.

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func elem(id uint32, data ...[]byte) []byte {
	d := cat(data...)
	return append(AppendElementHeader(nil, id, int64(len(d))), d...)
}

// unknown returns an element header with unknown size followed by data (no end).
func unknown(id uint32, data ...[]byte) []byte {
	return append(AppendElementHeader(nil, id, -1), cat(data...)...)
}

func uintElem(id uint32, v uint64) []byte { return AppendUint(nil, id, v) }

func block(track uint64, rel int16, flags byte, data ...byte) []byte {
	b := appendVint(nil, track)
	b = append(b, byte(uint16(rel)>>8), byte(rel), flags)
	return append(b, data...)
}

func simpleBlock(track uint64, rel int16, key bool, data ...byte) []byte {
	var flags byte
	if key {
		flags = 0x80
	}
	return elem(IDSimpleBlock, block(track, rel, flags, data...))
}

var testTracks = []Track{
	{Number: 1, UID: 11, Type: TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: []byte{1, 2, 3},
		DefaultDuration: 40 * time.Millisecond, Width: 320, Height: 240},
	{Number: 2, UID: 22, Type: TrackTypeAudio, CodecID: "A_AAC", CodecPrivate: []byte{0x11, 0x90},
		SamplingRate: 48000, Channels: 1, DefaultDuration: 10 * time.Millisecond},
}

func docStart(unknownSegment bool) []byte {
	b := AppendEBMLHeader(nil, "matroska")
	if unknownSegment {
		b = AppendSegmentStart(b)
	}
	return b
}

func segmentHead() []byte {
	b := AppendInfo(nil, DefaultTimecodeScale, "test")
	return AppendTracks(b, testTracks)
}

// describe renders an event compactly for table tests.
func describe(ev *Event) string {
	switch ev.Kind {
	case EventEBMLHeader:
		return "EBMLHeader " + ev.DocType
	case EventSegment:
		return fmt.Sprintf("Segment %d", ev.Size)
	case EventInfo:
		return fmt.Sprintf("Info %d", ev.TimecodeScale)
	case EventTracks:
		return fmt.Sprintf("Tracks %d", len(ev.Tracks))
	case EventCluster:
		return fmt.Sprintf("Cluster %d", ev.Timecode)
	case EventFrame:
		k := "-"
		if ev.Frame.Keyframe {
			k = "K"
		}
		s := fmt.Sprintf("Frame %d@%d%s %x", ev.Frame.Track, ev.Frame.Timecode, k, ev.Frame.Data)
		if ev.Frame.Duration != 0 {
			s += fmt.Sprintf(" d%d", ev.Frame.Duration)
		}
		if ev.Frame.DiscardPadding != 0 {
			s += fmt.Sprintf(" pad%d", ev.Frame.DiscardPadding)
		}
		return s
	case EventClusterEnd:
		return "ClusterEnd"
	case EventTags:
		var names []string
		for _, t := range ev.Tags {
			for _, st := range t.SimpleTags {
				names = append(names, st.Name+"="+st.Value)
			}
		}
		return "Tags " + strings.Join(names, ",")
	}
	return ev.Kind.String()
}

// readAll returns every event, described, and the error that ended the input.
func readAll(in []byte, opts ...Option) ([]string, error) {
	r := NewReader(bytes.NewReader(in), opts...)
	var out []string
	for {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, describe(ev))
		if len(out) > 1_000_000 {
			return out, errors.New("too many events")
		}
	}
}

var head = []string{"EBMLHeader matroska", "Segment -1", "Info 1000000", "Tracks 2"}

type readerCase struct {
	name    string
	in      []byte
	want    []string // events after head (when withHead) or all events
	noHead  bool
	wantErr error // nil: io.EOF
}

func readerCases() []readerCase {
	d := cat(docStart(true), segmentHead())
	huge := func(id uint32) []byte { return AppendElementHeader(nil, id, 1<<50) } // a petabyte
	return []readerCase{
		{name: "empty", in: nil, noHead: true},
		{name: "header only", in: docStart(true), noHead: true, want: []string{"EBMLHeader matroska", "Segment -1"}},
		{name: "known cluster", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 1000),
			simpleBlock(1, 0, true, 0xAA), simpleBlock(1, 40, false, 0xBB))),
			want: []string{"Cluster 1000", "Frame 1@1000K aa", "Frame 1@1040- bb", "ClusterEnd"}},
		{name: "unknown cluster ended by cluster", in: cat(d,
			unknown(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, 1)),
			unknown(IDCluster, uintElem(IDTimecode, 40), simpleBlock(1, -5, false, 2))),
			want: []string{"Cluster 0", "Frame 1@0K 01", "ClusterEnd", "Cluster 40", "Frame 1@35- 02", "ClusterEnd"}},
		{name: "unknown cluster ended by tags", in: cat(d,
			unknown(IDCluster, uintElem(IDTimecode, 7), simpleBlock(2, 0, true, 1)),
			AppendTags(nil, SimpleTag{Name: "A", Value: "b"})),
			want: []string{"Cluster 7", "Frame 2@7K 01", "ClusterEnd", "Tags A=b"}},
		{name: "unknown cluster ended by next document", in: cat(d,
			unknown(IDCluster, uintElem(IDTimecode, 7), simpleBlock(1, 0, true, 1)), d,
			unknown(IDCluster, uintElem(IDTimecode, 8))),
			want: append(append([]string{"Cluster 7", "Frame 1@7K 01", "ClusterEnd"}, head...), "Cluster 8", "ClusterEnd")},
		{name: "unknown cluster in known segment", noHead: true, in: cat(docStart(false),
			elem(IDSegment, segmentHead(), unknown(IDCluster, uintElem(IDTimecode, 3), simpleBlock(1, 0, true, 9)))),
			want: []string{"EBMLHeader matroska", "Segment 151", "Info 1000000", "Tracks 2", "Cluster 3", "Frame 1@3K 09", "ClusterEnd"}},
		{name: "skipped elements", in: cat(docStart(true), elem(IDSeekHead, []byte{1, 2}), elem(IDVoid, make([]byte, 5)),
			segmentHead(), elem(IDCues), elem(IDChapters, []byte{0}), elem(IDAttachments),
			elem(IDCluster, elem(IDCRC32, []byte{1, 2, 3, 4}), uintElem(IDTimecode, 5), elem(IDVoid), elem(0x4321, []byte{7}),
				simpleBlock(1, 0, true, 1))),
			want: []string{"Cluster 5", "Frame 1@5K 01", "ClusterEnd"}},
		{name: "block before timecode", in: cat(d, elem(IDCluster, simpleBlock(1, 2, true, 1))),
			want: []string{"Cluster 0", "Frame 1@2K 01", "ClusterEnd"}},
		{name: "empty cluster", in: cat(d, elem(IDCluster), unknown(IDCluster)),
			want: []string{"Cluster 0", "ClusterEnd", "Cluster 0", "ClusterEnd"}},
		{name: "unknown track", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), simpleBlock(200, 0, true, 1))),
			want: []string{"Cluster 0", "Frame 200@0K 01", "ClusterEnd"}},
		{name: "block group", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 100),
			elem(IDBlockGroup, elem(IDBlock, block(1, 0, 0, 1)), uintElem(IDBlockDuration, 40)),
			elem(IDBlockGroup, elem(IDBlock, block(1, 40, 0, 2)), AppendInt(nil, IDReferenceBlock, -40)))),
			want: []string{"Cluster 100", "Frame 1@100K 01 d40", "Frame 1@140- 02", "ClusterEnd"}},
		// An AAC priming frame as kvs writes it: before the cluster timecode, all of it discarded.
		{name: "discard padding", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 100),
			elem(IDBlockGroup, elem(IDBlock, block(2, -21, 0, 1)), AppendInt(nil, IDDiscardPadding, -21_333_333)),
			elem(IDBlockGroup, elem(IDBlock, block(2, 0, 0, 2)), AppendInt(nil, IDDiscardPadding, 5_000_000)))),
			want: []string{"Cluster 100", "Frame 2@79K 01 pad-21333333", "Frame 2@100K 02 pad5000000", "ClusterEnd"}},
		// Padding at the start goes to a laced block's first frame, at the end to its last.
		{name: "discard padding laced", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			elem(IDBlockGroup, elem(IDBlock, block(2, 0, 0x04, 1, 0xA, 0xB)), AppendInt(nil, IDDiscardPadding, -1)),
			elem(IDBlockGroup, elem(IDBlock, block(2, 20, 0x04, 1, 0xC, 0xD)), AppendInt(nil, IDDiscardPadding, 1)))),
			want: []string{"Cluster 0", "Frame 2@0K 0a pad-1", "Frame 2@10K 0b", "Frame 2@20K 0c", "Frame 2@30K 0d pad1", "ClusterEnd"}},
		{name: "discard padding too long", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			elem(IDBlockGroup, elem(IDBlock, block(2, 0, 0, 1)), elem(IDDiscardPadding, make([]byte, 9))))),
			want: []string{"Cluster 0"}, wantErr: errBadValue},
		{name: "xiph lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			elem(IDSimpleBlock, block(2, 0, 0x80|0x02, append([]byte{2, 1, 2}, 0xA, 0xB, 0xB, 0xC, 0xC, 0xC)...)))),
			want: []string{"Cluster 0", "Frame 2@0K 0a", "Frame 2@10K 0b0b", "Frame 2@20K 0c0c0c", "ClusterEnd"}},
		{name: "xiph lacing 255", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			elem(IDSimpleBlock, block(3, 0, 0x02, append([]byte{1, 255, 0}, make([]byte, 256)...)...)))),
			want: []string{"Cluster 0", "Frame 3@0- " + strings.Repeat("00", 255), "Frame 3@0- 00", "ClusterEnd"}},
		{name: "ebml lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			// sizes 2, 1 (delta -1: 0xBE), 3 (rest)
			elem(IDSimpleBlock, block(2, 0, 0x80|0x06, 2, 0x82, 0xBE, 1, 1, 2, 3, 3, 3)))),
			want: []string{"Cluster 0", "Frame 2@0K 0101", "Frame 2@10K 02", "Frame 2@20K 030303", "ClusterEnd"}},
		{name: "fixed lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0),
			elem(IDSimpleBlock, block(1, 0, 0x80|0x04, 1, 1, 1, 2, 2)))),
			want: []string{"Cluster 0", "Frame 1@0K 0101", "Frame 1@40K 0202", "ClusterEnd"}},
		{name: "tags nested", in: cat(d, elem(IDTags, elem(IDTag, elem(IDTargets, uintElem(0x68CA, 50)),
			elem(IDSimpleTag, AppendString(nil, IDTagName, "X"), AppendString(nil, IDTagString, "1"),
				elem(IDSimpleTag, AppendString(nil, IDTagName, "Y")))))),
			want: []string{"Tags X=1"}},
		{name: "two documents", noHead: true, in: cat(AppendFragment2(0), AppendFragment2(1000)),
			want: []string{"EBMLHeader webm", "Segment -1", "Info 1000000", "Tracks 2", "Cluster 0", "Frame 1@0K 01", "ClusterEnd",
				"EBMLHeader webm", "Segment -1", "Info 1000000", "Tracks 2", "Cluster 1000", "Frame 1@1000K 01", "ClusterEnd"}},

		// errors
		{name: "id too long", in: []byte{0x08, 1, 2, 3, 4, 0x80}, noHead: true, wantErr: errBadID},
		{name: "size vint too long", in: []byte{0x1A, 0x45, 0xDF, 0xA3, 0x00, 1}, noHead: true, wantErr: errBadSize},
		{name: "truncated header", in: []byte{0x1A, 0x45}, noHead: true, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated ebml header", in: docStart(true)[:10], noHead: true, wantErr: io.ErrUnexpectedEOF},
		{name: "unknown-size info", in: cat(docStart(true), unknown(IDInfo)), noHead: true,
			want: []string{"EBMLHeader matroska", "Segment -1"}, wantErr: errUnknownSize},
		{name: "petabyte block", in: cat(d, unknown(IDCluster, uintElem(IDTimecode, 0)), huge(IDSimpleBlock)),
			want: []string{"Cluster 0"}, wantErr: ErrElementTooLarge},
		{name: "petabyte tags", in: cat(d, huge(IDTags)), wantErr: ErrElementTooLarge},
		{name: "petabyte tracks", in: cat(docStart(true), huge(IDTracks)), noHead: true,
			want: []string{"EBMLHeader matroska", "Segment -1"}, wantErr: ErrElementTooLarge},
		{name: "petabyte void", in: cat(d, huge(IDVoid)), wantErr: io.ErrUnexpectedEOF},
		{name: "truncated known cluster", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, 1))[:12]),
			want: []string{"Cluster 0"}, wantErr: io.ErrUnexpectedEOF},
		{name: "child overflows cluster", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), []byte{0xA3, 0x90, 1, 2})),
			want: []string{"Cluster 0"}, wantErr: errOverflow},
		{name: "level-1 inside known cluster", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDTags))),
			want: []string{"Cluster 0"}, wantErr: errUnexpected},
		{name: "short block", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDSimpleBlock, []byte{0x81, 0}))),
			want: []string{"Cluster 0"}, wantErr: errBadBlock},
		{name: "bad xiph lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDSimpleBlock, block(1, 0, 0x02, 1, 9, 1)))),
			want: []string{"Cluster 0"}, wantErr: errBadLacing},
		{name: "bad ebml lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDSimpleBlock, block(1, 0, 0x06, 2, 0x81, 0x80, 1)))),
			want: []string{"Cluster 0"}, wantErr: errBadLacing},
		{name: "bad fixed lacing", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDSimpleBlock, block(1, 0, 0x04, 1, 1, 2, 3)))),
			want: []string{"Cluster 0"}, wantErr: errBadLacing},
		{name: "bad block in group", in: cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDBlockGroup, uintElem(IDBlockDuration, 1)))),
			want: []string{"Cluster 0"}, wantErr: errBadBlock},
		{name: "bad tracks child", in: cat(docStart(true), elem(IDTracks, elem(IDTrackEntry, []byte{0x86, 0x85, 1}))), noHead: true,
			want: []string{"EBMLHeader matroska", "Segment -1"}, wantErr: errOverflow},
		{name: "tags too deep", in: cat(d, elem(IDTags, elem(IDTag, deepTag(40)))), wantErr: errTooDeep},
		{name: "ebml header in known segment", noHead: true, in: cat(docStart(false), elem(IDSegment, docStart(false))),
			want: []string{"EBMLHeader matroska", "Segment 40"}, wantErr: errUnexpected},
		{name: "truncated known segment", noHead: true, in: cat(docStart(false), elem(IDSegment, segmentHead())[:40]),
			want: []string{"EBMLHeader matroska", "Segment 129", "Info 1000000"}, wantErr: io.ErrUnexpectedEOF},
	}
}

// AppendFragment2 is a tiny WebM chunk used by the tables.
func AppendFragment2(tc int64) []byte {
	b, err := AppendFragment(nil, &Fragment{DocType: "webm", Tracks: testTracks, Timecode: tc,
		Frames: []Frame{{Track: 1, Timecode: tc, Keyframe: true, Data: []byte{1}}}})
	if err != nil {
		panic(err)
	}
	return b
}

func deepTag(depth int) []byte {
	b := elem(IDSimpleTag, AppendString(nil, IDTagName, "leaf"))
	for i := 0; i < depth; i++ {
		b = elem(IDSimpleTag, b)
	}
	return b
}

func TestReaderEvents(t *testing.T) {
	t.Parallel()
	for _, tc := range readerCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.in)
			want := tc.want
			if !tc.noHead {
				want = append(append([]string(nil), head...), tc.want...)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if tc.wantErr == nil {
				if err != io.EOF {
					t.Fatalf("err = %v, want io.EOF", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %T %v, want *SyntaxError", err, err)
			}
		})
	}
}

func TestReaderSyntaxErrorOffset(t *testing.T) {
	t.Parallel()
	d := cat(docStart(true), segmentHead())
	in := cat(d, elem(IDCluster, uintElem(IDTimecode, 0), elem(IDSimpleBlock, []byte{0x81, 0})))
	_, err := readAll(in)
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	// The cluster header is 2 bytes (ID 4 + size 1 = 5), its Timecode 3.
	if want := int64(len(d) + 5 + 3); se.Offset != want || se.ID != IDSimpleBlock {
		t.Errorf("offset %d id %#x, want %d %#x", se.Offset, se.ID, want, IDSimpleBlock)
	}
	if !strings.Contains(se.Error(), fmt.Sprintf("offset %d, element 0xa3", se.Offset)) {
		t.Errorf("message %q", se.Error())
	}
}

func TestReaderTracksAndInfo(t *testing.T) {
	t.Parallel()
	in := cat(docStart(true), AppendInfo(nil, 100_000, ""), AppendTracks(nil, testTracks))
	r := NewReader(bytes.NewReader(in))
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if r.TimecodeScale() != 100_000 {
		t.Errorf("scale %d", r.TimecodeScale())
	}
	if fmt.Sprintf("%+v", r.Tracks()) != fmt.Sprintf("%+v", testTracks) {
		t.Errorf("tracks\n%+v\nwant\n%+v", r.Tracks(), testTracks)
	}
	if r.Offset() != int64(len(in)) {
		t.Errorf("offset %d, want %d", r.Offset(), len(in))
	}
}

func TestReaderSkipHandler(t *testing.T) {
	t.Parallel()
	in := cat(docStart(true), elem(IDVoid, make([]byte, 3)), segmentHead(), elem(IDCues, []byte{1}))
	type skipped struct {
		id           uint32
		offset, size int64
	}
	var got []skipped
	_, err := readAll(in, WithSkipHandler(func(id uint32, offset, size int64) { got = append(got, skipped{id, offset, size}) }))
	if err != io.EOF {
		t.Fatal(err)
	}
	start := int64(len(docStart(true)))
	want := []skipped{{IDVoid, start, 3}, {IDCues, start + 5 + int64(len(segmentHead())), 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("skipped %v, want %v", got, want)
	}
}

// stallReader serves data and then fails: reading past data means the Reader read ahead.
type stallReader struct {
	data []byte
	err  error
}

var errStalled = errors.New("read past the available data")

func (s *stallReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, errStalled
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// A known-size cluster must end as soon as its last byte is read, before any more input arrives.
func TestReaderClusterEndWithoutReadAhead(t *testing.T) {
	t.Parallel()
	in := cat(docStart(true), segmentHead(), elem(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, 1)))
	r := NewReader(&stallReader{data: in})
	var got []string
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, describe(ev))
		if ev.Kind == EventClusterEnd {
			break
		}
	}
	if _, err := r.Next(); !errors.Is(err, errStalled) {
		t.Errorf("next err = %v, want the source's error", err)
	}
}

// Truncating a small document at every offset never panics and gives io.EOF (at an element
// boundary of an unknown-size segment) or a *SyntaxError wrapping io.ErrUnexpectedEOF.
func TestReaderTruncation(t *testing.T) {
	t.Parallel()
	full, err := AppendFragment(nil, &Fragment{
		Tracks:       testTracks,
		Tags:         []SimpleTag{{Name: TagFragmentNumber, Value: "123"}},
		Timecode:     1000,
		Frames:       []Frame{{Track: 1, Timecode: 1000, Keyframe: true, Data: []byte{1, 2, 3}}, {Track: 2, Timecode: 1010, Duration: 10, Data: []byte{4}}},
		TrailingTags: []SimpleTag{{Name: TagContinuationToken, Value: "123"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, known := range []bool{false, true} {
		in := full
		if known {
			in = cat(docStart(false), elem(IDSegment, full[len(docStart(true)):]))
		}
		for n := 0; n < len(in); n++ {
			_, err := readAll(in[:n])
			if err == io.EOF {
				continue
			}
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("known=%v, %d bytes: err = %v", known, n, err)
			}
		}
		if _, err := readAll(in); err != io.EOF {
			t.Errorf("whole: %v", err)
		}
	}
}

func TestReaderLimits(t *testing.T) {
	t.Parallel()
	d := cat(docStart(true), segmentHead())
	in := cat(d, elem(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, make([]byte, 100)...)),
		AppendTags(nil, SimpleTag{Name: "n", Value: strings.Repeat("v", 100)}))
	if _, err := readAll(in, WithMaxFrameSize(50)); !errors.Is(err, ErrElementTooLarge) {
		t.Errorf("frame: %v", err)
	}
	if _, err := readAll(in, WithMaxTagsSize(50)); !errors.Is(err, ErrElementTooLarge) {
		t.Errorf("tags: %v", err)
	}
	if _, err := readAll(in, WithMaxElementSize(50)); !errors.Is(err, ErrElementTooLarge) {
		t.Errorf("tracks: %v", err)
	}
	if _, err := readAll(in, WithMaxFrameSize(200), WithMaxTagsSize(200), WithMaxElementSize(300)); err != io.EOF {
		t.Errorf("within limits: %v", err)
	}
}

// A size claiming petabytes fails before anything is allocated for it; with the caps lifted the
// Reader still does not trust it and fails at the end of input.
func TestReaderHugeSizeDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		id      uint32
		opts    []Option
		wantErr error
	}{
		{"simple block", IDSimpleBlock, nil, ErrElementTooLarge},
		{"block group", IDBlockGroup, nil, ErrElementTooLarge},
		{"simple block no cap", IDSimpleBlock, []Option{WithMaxFrameSize(1 << 60)}, io.ErrUnexpectedEOF},
		{"block group no cap", IDBlockGroup, []Option{WithMaxFrameSize(1 << 60)}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := cat(docStart(true), segmentHead(), unknown(IDCluster, uintElem(IDTimecode, 0)),
				AppendElementHeader(nil, tc.id, 1<<55), make([]byte, 1000))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := readAll(in, tc.opts...)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("allocated %d bytes for a huge element", grew)
			}
		})
	}
}

func TestReaderErrorsAreSticky(t *testing.T) {
	t.Parallel()
	r := NewReader(bytes.NewReader([]byte{0x08, 0, 0, 0, 0}))
	_, err1 := r.Next()
	_, err2 := r.Next()
	if err1 == nil || err1 != err2 {
		t.Errorf("errors %v, %v", err1, err2)
	}
}

// Reading frames allocates nothing in steady state.
func TestReaderSteadyStateAllocs(t *testing.T) {
	in := benchStream(5000, 500, 25)
	r := NewReader(bytes.NewReader(in))
	for i := 0; i < 50; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per event", allocs)
	}
}

func TestReadVint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []byte
		v    uint64
		n    int
	}{
		{"empty", nil, 0, 0},
		{"zero byte", []byte{0}, 0, 0},
		{"1 byte", []byte{0x81}, 1, 1},
		{"1 byte max", []byte{0xFF}, 127, 1},
		{"2 bytes", []byte{0x40, 0x80}, 128, 2},
		{"8 bytes", []byte{1, 0, 0, 0, 0, 0, 0, 5}, 5, 8},
		{"short", []byte{0x40}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, n := readVint(tc.in)
			if v != tc.v || n != tc.n {
				t.Errorf("got %d,%d want %d,%d", v, n, tc.v, tc.n)
			}
		})
	}
}

func TestEventKindString(t *testing.T) {
	t.Parallel()
	if EventFrame.String() != "Frame" || EventKind(99).String() != "EventKind(99)" {
		t.Error(EventFrame.String(), EventKind(99).String())
	}
}
