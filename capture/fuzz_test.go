package capture

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

func seedClip(f *testing.F, name string, n int) []byte {
	b, err := os.ReadFile(testdata(name))
	if err != nil {
		f.Fatal(err)
	}
	return b[:min(n, len(b))]
}

// FuzzAccessUnits checks the Annex B access unit splitter: no panic, and the access units hold
// exactly the NAL units of the input, in order, whatever the read sizes.
func FuzzAccessUnits(f *testing.F) {
	for _, tc := range annexBFuzzSeeds() {
		f.Add(tc, uint8(0))
	}
	f.Add(seedClip(f, "h264.h264", 3000), uint8(7))
	f.Add(seedClip(f, "h265.h265", 3000), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		want, wantErr := splitNALUs(codec.WalkAnnexB, data)
		for _, c := range []codec.Codec{codec.H264, codec.H265} {
			var r io.Reader = bytes.NewReader(data)
			if chunk > 0 {
				r = &chunkReader{data: data, n: int(chunk)}
			}
			s := newAUSplitter(r, c)
			var got [][]byte
			var err error
			for {
				var au []byte
				au, err = s.next()
				if err != nil {
					break
				}
				nalus, err := splitNALUs(walkAVCC, au)
				if err != nil {
					t.Fatalf("%v: access unit is not length-prefixed: %v", c, err)
				}
				vcl := 0
				for i, n := range nalus {
					if codec.IsVCL(c, n) {
						vcl++
					} else if vcl > 0 && codec.StartsAccessUnit(c, n) {
						t.Fatalf("%v: NAL unit %d starts an access unit but is inside one", c, i)
					}
					if vcl > 1 && codec.FirstSliceOfPicture(c, n) {
						t.Fatalf("%v: two pictures in one access unit", c)
					}
				}
				got = append(got, nalus...)
			}
			if !errors.Is(err, io.EOF) {
				if wantErr == nil && len(data) <= MaxAccessUnitSize {
					t.Fatalf("%v: splitter failed on input WalkAnnexB accepts: %v", c, err)
				}
				continue
			}
			if wantErr != nil {
				if len(got) != 0 {
					t.Fatalf("%v: splitter found NAL units where WalkAnnexB fails (%v)", c, wantErr)
				}
				continue
			}
			if len(got) != len(want) {
				t.Fatalf("%v: %d NAL units, WalkAnnexB %d", c, len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("%v: NAL unit %d differs", c, i)
				}
			}
		}
	})
}

func annexBFuzzSeeds() [][]byte {
	return [][]byte{
		nil,
		{0, 0, 1},
		{0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x41, 0x9A, 0, 0, 1, 0x41, 0x1A},
		{0, 0, 1, 0x46, 0x01, 0x50, 0, 0, 1, 0x26, 0x01, 0xAF, 0, 0, 1, 0x02, 0x01, 0xD0},
		annexB(spsWithoutTiming(), []byte{0x68, 0xCE, 0x3C, 0x80}, []byte{0x65, 0x88, 0x84}, []byte{0x41, 0x9A}),
	}
}

// chunkReader returns at most n bytes per Read, to exercise buffer boundaries.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// FuzzOpen sniffs and opens arbitrary input as a stream (stdin) and reads it to the end: no panic,
// and a source that opens gives frames of declared tracks (those of Tracks since the last
// ErrDiscontinuity).
func FuzzOpen(f *testing.F) {
	for _, tc := range sniffCases {
		f.Add(tc.head)
	}
	for _, s := range annexBFuzzSeeds() {
		f.Add(s)
	}
	f.Add(seedClip(f, "h264.mkv", 2000))
	f.Add(seedClip(f, "webm_vp8.webm", 2000))
	f.Add(seedClip(f, "h264.h264", 2000))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = Sniff(data)
		for _, c := range []codec.Codec{0, codec.H264, codec.H265} { // 0: detected; else given, as --codec (a stream joined mid-NAL)
			fuzzOpenRead(t, data, Options{FrameRate: 25, Codec: c})
		}
	})
}

// fuzzOpenRead opens data with opts and reads up to 1000 frames, each of a declared track.
func fuzzOpenRead(t *testing.T, data []byte, opts Options) {
	ctx := context.Background()
	src, err := Open(ctx, bytes.NewReader(data), "-", opts)
	if err != nil {
		return
	}
	defer src.Close()
	known := map[uint64]bool{}
	learn := func() {
		clear(known)
		for _, tr := range src.Tracks() {
			known[tr.Number] = true
		}
	}
	learn()
	for i := 0; i < 1000; i++ {
		fr, err := src.ReadFrame(ctx)
		if errors.Is(err, ErrDiscontinuity) {
			learn() // the tracks may change there; reading goes on
			continue
		}
		if err != nil {
			return
		}
		if !known[fr.Track] {
			t.Fatalf("frame of undeclared track %d", fr.Track)
		}
	}
}

// FuzzFragmenterReuse: with ReuseFrameData, fragments of any input equal the default ones, and
// a fragment is intact after one more Next.
func FuzzFragmenterReuse(f *testing.F) {
	f.Add(seedClip(f, "h264.mkv", 6000))
	f.Add(seedClip(f, "h264_aac.mkv", 6000))
	f.Add(seedClip(f, "webm_vp8.webm", 4000))
	f.Add(seedClip(f, "h264_aac.mp4", 1<<20))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		open := func(reuse bool) *Fragmenter {
			src, err := Open(ctx, bytes.NewReader(data), "-", Options{FrameRate: 25})
			if err != nil {
				return nil
			}
			fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: 100 * time.Millisecond, ReuseFrameData: reuse})
			if err != nil {
				src.Close()
				return nil
			}
			return fr
		}
		plain := open(false)
		if plain == nil {
			return
		}
		defer plain.Close()
		reuse := open(true)
		if reuse == nil {
			t.Fatal("the same input opened once, not twice")
		}
		defer reuse.Close()
		var prev, prevCopy *mkv.Fragment
		for i := range 50 {
			want, werr := plain.Next(ctx)
			got, gerr := reuse.Next(ctx)
			if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
				t.Fatalf("fragment %d: errors %v / %v", i, werr, gerr)
			}
			if werr != nil {
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fragment %d differs with ReuseFrameData", i)
			}
			if prev != nil && !reflect.DeepEqual(prev, prevCopy) {
				t.Fatalf("fragment %d changed when the next one was read", i-1)
			}
			prev, prevCopy = got, cloneFragment(got)
		}
	})
}

// splitNALUs returns the NAL units walk finds in b.
func splitNALUs(walk func([]byte, func([]byte) error) error, b []byte) ([][]byte, error) {
	var nalus [][]byte
	err := walk(b, func(n []byte) error {
		nalus = append(nalus, n)
		return nil
	})
	return nalus, err
}

// walkAVCC walks 4-byte length-prefixed NAL units, the form of frames and access units.
func walkAVCC(b []byte, fn func([]byte) error) error { return codec.WalkAVCC(b, 4, fn) }
