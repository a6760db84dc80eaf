package fmp4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/openkvs/kvs/mkv"
)

// FuzzAppendMediaSegment remuxes arbitrary fragments (frames, timecodes, scales, keyframe flags
// and track numbers from the input) on the golden clips' tracks and checks: no panic, only
// documented errors, and on success a segment that mp4ff parses back with every frame's bytes and
// the decode times in order.
func FuzzAppendMediaSegment(f *testing.F) {
	tracks := testTracks(f, "h264_aac.mkv")
	for _, frag := range fragments(f, "h264_aac.mkv", time.Second)[:2] {
		f.Add(encodeFuzzFragment(frag), int64(time.Hour))
	}
	f.Add([]byte{}, int64(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 0, 5, 0, 0, 0, 1, 0x65}, int64(-1))
	f.Fuzz(func(t *testing.T, in []byte, start int64) {
		frag := decodeFuzzFragment(in, tracks)
		seg, err := AppendMediaSegment(nil, 1, frag, time.Duration(start))
		if err != nil {
			if !errors.Is(err, ErrEmptyFragment) && !errors.Is(err, ErrUnknownTrack) && !errors.Is(err, ErrTimeRange) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		parsed, err := mp4.DecodeFile(bytes.NewReader(seg))
		if err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		mf := parsed.Segments[0].Fragments[0]
		var want []byte
		n := 0
		for _, id := range []uint64{1, 2} {
			for _, fr := range frag.Frames {
				if fr.Track == id {
					want = append(want, fr.Data...)
					n++
				}
			}
		}
		if !bytes.Equal(mf.Mdat.Data, want) {
			t.Fatalf("mdat holds %d bytes, want %d", len(mf.Mdat.Data), len(want))
		}
		got := 0
		for _, traf := range mf.Moof.Trafs {
			got += int(traf.Trun.SampleCount())
			off := uint64(0)
			for _, s := range traf.Trun.Samples {
				if s.CompositionTimeOffset < 0 {
					t.Fatalf("negative composition offset %d", s.CompositionTimeOffset)
				}
				off += uint64(s.Dur)
			}
		}
		if got != n {
			t.Fatalf("%d samples, want %d", got, n)
		}
		// Each track alone (DASH): its frames only, as track 1.
		for _, id := range []uint64{1, 2} {
			var want []byte
			for _, fr := range frag.Frames {
				if fr.Track == id {
					want = append(want, fr.Data...)
				}
			}
			// A track without frames in frag gets a segment without samples.
			seg, err := AppendTrackSegment(nil, 1, frag, id, time.Duration(start))
			if err != nil {
				t.Fatalf("track %d alone: %v (the muxed segment was made)", id, err)
			}
			parsed, err := mp4.DecodeFile(bytes.NewReader(seg))
			if err != nil {
				t.Fatalf("track %d alone: output does not parse: %v", id, err)
			}
			mf := parsed.Segments[0].Fragments[0]
			if !bytes.Equal(mf.Mdat.Data, want) || len(mf.Moof.Trafs) != 1 || mf.Moof.Trafs[0].Tfhd.TrackID != 1 {
				t.Fatalf("track %d alone: mdat %d bytes (want %d), %d trafs", id, len(mf.Mdat.Data), len(want), len(mf.Moof.Trafs))
			}
		}
	})
}

// encodeFuzzFragment writes frames as: scale (4 bytes, 0 = default), cluster timecode (4), then
// per frame: track (1), flags (1: bit 7 keyframe), timecode delta (2, signed), length (1), data.
func encodeFuzzFragment(f *mkv.Fragment) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(f.TimecodeScale))
	b = binary.BigEndian.AppendUint32(b, uint32(f.Timecode))
	for _, fr := range f.Frames {
		flags := byte(0)
		if fr.Keyframe {
			flags = 0x80
		}
		data := fr.Data
		if len(data) > 255 {
			data = data[:255]
		}
		b = append(b, byte(fr.Track), flags)
		b = binary.BigEndian.AppendUint16(b, uint16(int16(fr.Timecode-f.Timecode)))
		b = append(b, byte(len(data)))
		b = append(b, data...)
	}
	return b
}

func decodeFuzzFragment(in []byte, tracks []mkv.Track) *mkv.Fragment {
	f := &mkv.Fragment{Tracks: tracks}
	if len(in) < 8 {
		return f
	}
	f.TimecodeScale = uint64(binary.BigEndian.Uint32(in))
	f.Timecode = int64(int32(binary.BigEndian.Uint32(in[4:])))
	in = in[8:]
	for len(in) >= 5 {
		fr := mkv.Frame{
			Track:    uint64(in[0]),
			Keyframe: in[1]&0x80 != 0,
			Timecode: f.Timecode + int64(int16(binary.BigEndian.Uint16(in[2:]))),
		}
		if in[1]&0x40 != 0 {
			fr.Duration = int64(in[1] & 0x3F)
		}
		n := min(int(in[4]), len(in)-5)
		fr.Data = in[5 : 5+n]
		in = in[5+n:]
		f.Frames = append(f.Frames, fr)
	}
	return f
}
