package mpegts

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
)

// fuzzFragment decodes in into a fragment on tracks: frames of [track index, flags, timecode
// (int16), size (uint16), data] until in runs out.
func fuzzFragment(in []byte, tracks []mkv.Track) *mkv.Fragment {
	f := &mkv.Fragment{Tracks: tracks, TimecodeScale: mkv.DefaultTimecodeScale}
	for len(in) >= 6 {
		tr := tracks[int(in[0])%len(tracks)].Number
		key := in[1]&1 != 0
		tc := int64(int16(binary.BigEndian.Uint16(in[2:])))
		n := min(int(binary.BigEndian.Uint16(in[4:])), len(in)-6)
		f.Frames = append(f.Frames, mkv.Frame{Track: tr, Keyframe: key, Timecode: tc, Data: in[6 : 6+n]})
		in = in[6+n:]
	}
	return f
}

// encodeFuzz is fuzzFragment's inverse for a clip's fragment (frames of tracks numbered 1 and 2).
func encodeFuzz(f *mkv.Fragment) []byte {
	var b []byte
	for _, fr := range f.Frames {
		key := byte(0)
		if fr.Keyframe {
			key = 1
		}
		b = append(b, byte(fr.Track-1), key)
		b = binary.BigEndian.AppendUint16(b, uint16(fr.Timecode-f.Timecode))
		b = binary.BigEndian.AppendUint16(b, uint16(len(fr.Data)))
		b = append(b, fr.Data...)
	}
	return b
}

// FuzzAppendSegment remuxes arbitrary frames (their NAL unit structure, timecodes, keyframe flags
// and tracks from the input) on the golden clips' H.264 + AAC tracks and checks: no panic, only
// documented errors, and on success whole 188-byte packets, each with its sync byte, starting with
// the PAT.
func FuzzAppendSegment(f *testing.F) {
	frags := clipFragments(f, "h264_aac.mkv")
	tracks := frags[0].Tracks
	for _, frag := range frags[:2] {
		f.Add(encodeFuzz(frag), int64(time.Hour))
	}
	f.Add([]byte{}, int64(0))
	f.Add([]byte{0, 1, 0, 0, 0, 9, 0, 0, 0, 5, 0x65, 0, 0, 0, 0, 0}, int64(-1))
	f.Add([]byte{0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}, int64(1<<62))
	f.Fuzz(func(t *testing.T, in []byte, start int64) {
		frag := fuzzFragment(in, tracks)
		seg, err := AppendSegment(nil, frag, time.Duration(start), nil, 0)
		if err != nil {
			if !errors.Is(err, fmp4.ErrEmptyFragment) && !errors.Is(err, fmp4.ErrTimeRange) && !errors.Is(err, ErrInvalidFrame) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if len(seg) == 0 || len(seg)%188 != 0 {
			t.Fatalf("%d bytes: not whole TS packets", len(seg))
		}
		for i := 0; i < len(seg); i += 188 {
			if seg[i] != 0x47 {
				t.Fatalf("packet %d has no sync byte", i/188)
			}
		}
		if pid := binary.BigEndian.Uint16(seg[1:]) & 0x1FFF; pid != 0 {
			t.Fatalf("first packet of PID %d, want the PAT", pid)
		}
	})
}
