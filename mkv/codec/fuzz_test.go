package codec

import (
	"bytes"
	"slices"
	"testing"
)

func FuzzAnnexB(f *testing.F) {
	for _, tc := range annexBCases {
		f.Add(tc.in)
	}
	for _, c := range clips {
		data := readClip(f, c.file)
		f.Add(data[:min(len(data), 2048)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nalus, err := splitAnnexB(data)
		if err != nil {
			if _, err := AppendAVCC(nil, data); err == nil {
				t.Fatal("WalkAnnexB fails but AppendAVCC succeeds")
			}
			return
		}
		for i, n := range nalus {
			if len(n) == 0 || n[len(n)-1] == 0 || bytes.Contains(n, []byte{0, 0, 1}) {
				t.Fatalf("NAL unit %d is not a clean NAL unit: % x", i, n)
			}
		}
		avcc, err := AppendAVCC(nil, data)
		if err != nil {
			t.Fatal(err)
		}
		back, err := appendAnnexB(nil, avcc)
		if err != nil {
			t.Fatal(err)
		}
		again, err := splitAnnexB(back)
		if err != nil {
			t.Fatal(err)
		}
		if len(again) != len(nalus) {
			t.Fatalf("round trip: %d NAL units, want %d", len(again), len(nalus))
		}
		for i := range nalus {
			if !bytes.Equal(again[i], nalus[i]) {
				t.Fatalf("round trip: NAL unit %d differs", i)
			}
		}
		for _, c := range []Codec{H264, H265} {
			if slices.ContainsFunc(nalus, func(n []byte) bool { return IsRandomAccessNALU(c, n) || IsRecoveryPoint(c, n) }) != IsKeyframeAVCC(c, avcc) {
				t.Fatalf("%v: keyframe detection differs between forms", c)
			}
		}
	})
}

// FuzzSPS feeds arbitrary bytes to the SPS parser, the record builders and the record parsers.
func FuzzSPS(f *testing.F) {
	for _, c := range clips {
		nalus, err := splitAnnexB(readClip(f, c.file))
		if err != nil {
			f.Fatal(err)
		}
		vps, sps, pps := paramSets(c.codec, nalus)
		f.Add(sps)
		if c.codec == H264 {
			rec, err := BuildAVCConfig([][]byte{sps}, [][]byte{pps})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(rec)
		} else {
			f.Add(vps)
			rec, err := BuildHEVCConfig([][]byte{vps}, [][]byte{sps}, [][]byte{pps})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(rec)
		}
	}
	pps264 := []byte{0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0}
	vps265 := []byte{0x40, 0x01, 0x0C}
	pps265 := []byte{0x44, 0x01, 0xC1}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []Codec{H264, H265} {
			if info, err := ParseSPS(c, data); err == nil {
				if info.Width <= 0 || info.Height <= 0 || info.Width > maxDimension || info.Height > maxDimension {
					t.Fatalf("%v: size %dx%d accepted", c, info.Width, info.Height)
				}
				if fps, ok := info.FrameRate(); ok && !(fps > 0) {
					t.Fatalf("%v: frame rate %v", c, fps)
				}
			}
			if ps, err := ParseConfig(c, data); err == nil {
				if len(ps.SPS) == 0 || len(ps.PPS) == 0 || (c == H265 && len(ps.VPS) == 0) {
					t.Fatalf("%v: record accepted without parameter sets", c)
				}
			}
		}
		if rec, err := BuildAVCConfig([][]byte{data}, [][]byte{pps264}); err == nil {
			ps, err := ParseAVCConfig(rec)
			if err != nil {
				t.Fatalf("built avcC does not parse: %v", err)
			}
			if !bytes.Equal(ps.SPS[0], data) || !bytes.Equal(ps.PPS[0], pps264) || ps.LengthSize != 4 {
				t.Fatal("avcC round trip differs")
			}
		}
		if rec, err := BuildHEVCConfig([][]byte{vps265}, [][]byte{data}, [][]byte{pps265}); err == nil {
			ps, err := ParseHEVCConfig(rec)
			if err != nil {
				t.Fatalf("built hvcC does not parse: %v", err)
			}
			if !bytes.Equal(ps.SPS[0], data) || !bytes.Equal(ps.VPS[0], vps265) || ps.LengthSize != 4 {
				t.Fatal("hvcC round trip differs")
			}
		}
	})
}
