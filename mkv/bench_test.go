package mkv

import (
	"bytes"
	"io"
	"testing"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"
)

// benchFrames returns n frames of size bytes, perCluster to a cluster, 40 ms apart.
func benchFrames(n, size int) []Frame {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	frames := make([]Frame, n)
	for i := range frames {
		frames[i] = Frame{Track: 1, Timecode: int64(i) * 40, Keyframe: i%25 == 0, Data: data}
	}
	return frames
}

// benchStream returns one MKV document (unknown-size Segment) with n frames of size bytes in
// known-size clusters of perCluster frames.
func benchStream(n, size, perCluster int) []byte {
	frames := benchFrames(n, size)
	b := cat(docStart(true), segmentHead())
	for i := 0; i < n; i += perCluster {
		j := min(i+perCluster, n)
		var err error
		if b, err = AppendCluster(b, frames[i].Timecode, frames[i:j]); err != nil {
			panic(err)
		}
	}
	return b
}

func benchmarkReader(b *testing.B, size int) {
	in := benchStream(2000, size, 25)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	br := bytes.NewReader(in)
	for b.Loop() {
		br.Reset(in)
		r := NewReader(br)
		frames := 0
		for {
			ev, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if ev.Kind == EventFrame {
				frames++
			}
		}
		if frames != 2000 {
			b.Fatalf("%d frames", frames)
		}
	}
}

func BenchmarkReader10k(b *testing.B) { benchmarkReader(b, 10_000) }
func BenchmarkReader500(b *testing.B) { benchmarkReader(b, 500) }

func benchmarkWriter(b *testing.B, size int) {
	frames := benchFrames(2000, size)
	f := &Fragment{Tracks: testTracks, Tags: []SimpleTag{{Name: TagFragmentNumber, Value: "1"}}}
	buf := make([]byte, 0, 2000*(size+32)+4096)
	write := func() {
		buf = buf[:0]
		for i := 0; i < len(frames); i += 25 {
			f.Timecode = frames[i].Timecode
			f.Frames = frames[i : i+25]
			var err error
			if buf, err = AppendFragment(buf, f); err != nil {
				b.Fatal(err)
			}
		}
	}
	write()
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		write()
	}
}

func BenchmarkWriter10k(b *testing.B) { benchmarkWriter(b, 10_000) }
func BenchmarkWriter500(b *testing.B) { benchmarkWriter(b, 500) }

func benchmarkEBMLGoReader(b *testing.B, size int) {
	in := benchStream(2000, size, 25)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var doc struct {
			Header  webm.EBMLHeader `ebml:"EBML"`
			Segment struct {
				Cluster []webm.Cluster `ebml:"Cluster"`
			} `ebml:"Segment,size=unknown"`
		}
		if err := ebml.Unmarshal(bytes.NewReader(in), &doc); err != nil {
			b.Fatal(err)
		}
		frames := 0
		for _, c := range doc.Segment.Cluster {
			frames += len(c.SimpleBlock)
		}
		if frames != 2000 {
			b.Fatalf("%d frames", frames)
		}
	}
}

func BenchmarkEBMLGoReader10k(b *testing.B) { benchmarkEBMLGoReader(b, 10_000) }
func BenchmarkEBMLGoReader500(b *testing.B) { benchmarkEBMLGoReader(b, 500) }
