package cmd

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/openkvs/kvs/mkv"
)

// rawChunkSeeds are GetMedia chunks as the server writes them: two with frames, one with an empty
// Cluster, and an error chunk.
func rawChunkSeeds(t testing.TB) (chunks [][]byte) {
	tracks := []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: []byte{1, 2, 3}}}
	for i, frames := range [][]mkv.Frame{
		{{Track: 1, Timecode: 1000, Keyframe: true, Data: bytes.Repeat([]byte{7}, 70_000)}, {Track: 1, Timecode: 1033, Data: []byte{1}}},
		{{Track: 1, Timecode: 2000, Keyframe: true, Data: []byte{9, 9}, Duration: 5}},
		nil,
	} {
		f := &mkv.Fragment{Tracks: tracks, Tags: []mkv.SimpleTag{{Name: mkv.TagFragmentNumber, Value: fmt.Sprintf("9134385233318143239268206260774392014615916939%d", 2+i)}},
			Timecode: int64(1000 * (i + 1)), Frames: frames, TrailingTags: []mkv.SimpleTag{{Name: mkv.TagContinuationToken, Value: "x"}}}
		b, err := mkv.AppendFragment(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, b)
	}
	b := mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska"))
	return append(chunks, mkv.AppendTags(b, mkv.SimpleTag{Name: mkv.TagFragmentNumber, Value: "5"},
		mkv.SimpleTag{Name: mkv.TagErrorID, Value: "4000"}, mkv.SimpleTag{Name: mkv.TagErrorCode, Value: "NOT_FOUND"}))
}

func TestSplitChunks(t *testing.T) {
	t.Parallel()
	seeds := rawChunkSeeds(t)
	got, err := splitChunks(bytes.Join(seeds, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []rawChunk{
		{number: "91343852333181432392682062607743920146159169392", frames: true},
		{number: "91343852333181432392682062607743920146159169393", frames: true},
		{number: "91343852333181432392682062607743920146159169394"},
		{number: "5", failed: true},
	}
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d", len(got), len(want))
	}
	for i := range want {
		g := got[i]
		if !bytes.Equal(g.data, seeds[i]) || g.number != want[i].number || g.frames != want[i].frames || g.failed != want[i].failed {
			t.Errorf("chunk %d: %d bytes (want %d), number %q, frames %v, failed %v; want %+v", i, len(g.data), len(seeds[i]), g.number, g.frames, g.failed, want[i])
		}
	}
	for _, bad := range [][]byte{seeds[0][:len(seeds[0])-1], seeds[0][4:], {0x1A, 0x45}, {0x00}} {
		if _, err := splitChunks(bad); err == nil {
			t.Errorf("%d bytes of bad input: no error", len(bad))
		}
	}
}

// FuzzSplitChunks: no panic on any input, and what it accepts it splits into chunks that start
// with an EBML header and put back together are the input.
func FuzzSplitChunks(f *testing.F) {
	seeds := rawChunkSeeds(f)
	f.Add(bytes.Join(seeds, nil))
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		chunks, err := splitChunks(in)
		if err != nil {
			return
		}
		var joined []byte
		for _, c := range chunks {
			if id, _, _, err := mkv.DecodeElementHeader(c.data); err != nil || id != mkv.IDEBML {
				t.Fatalf("a chunk starts with %#x, %v", id, err)
			}
			joined = append(joined, c.data...)
		}
		if !bytes.Equal(joined, in) {
			t.Fatalf("chunks of %d bytes from %d bytes of input", len(joined), len(in))
		}
	})
}

// A response is given back in the order asked; a fragment not asked for, or one asked for that
// is not there, fails the batch, naming it.
func TestBatchAnswer(t *testing.T) {
	t.Parallel()
	a := newBatchAnswer[string]([]string{"10", "11", "12"})
	for _, n := range []string{"12", "10", "11"} {
		if err := a.add(n, "f"+n); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.inOrder([]string{"10", "11", "12"})
	if err != nil || strings.Join(got, ",") != "f10,f11,f12" {
		t.Fatalf("in order: %v, %v", got, err)
	}
	if err := a.add("13", "f13"); err == nil || !strings.Contains(err.Error(), `fragment "13", which was not asked for`) {
		t.Errorf("fragment not asked for: %v", err)
	}
	b := newBatchAnswer[string]([]string{"10", "11"})
	_ = b.add("10", "f10")
	if _, err := b.inOrder([]string{"10", "11"}); err == nil || !strings.Contains(err.Error(), "fragment 11 missing") {
		t.Errorf("fragment missing: %v", err)
	}
}
