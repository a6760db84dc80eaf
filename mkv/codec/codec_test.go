package codec

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// clip is one raw Annex B golden clip from ../../testdata (see its README).
type clip struct {
	name   string
	file   string
	codec  Codec
	frames int
	width  int
	height int
	fps    float64
}

var clips = []clip{
	{name: "h264", file: "h264.h264", codec: H264, frames: 100, width: 320, height: 240, fps: 25},
	{name: "h265", file: "h265.h265", codec: H265, frames: 50, width: 320, height: 240, fps: 25},
}

func readClip(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// paramSets returns the first VPS, SPS and PPS of an Annex B stream.
func paramSets(c Codec, nalus [][]byte) (vps, sps, pps []byte) {
	want := map[int]*[]byte{H264NALUSPS: &sps, H264NALUPPS: &pps}
	if c == H265 {
		want = map[int]*[]byte{H265NALUVPS: &vps, H265NALUSPS: &sps, H265NALUPPS: &pps}
	}
	for _, n := range nalus {
		if p, ok := want[NALUType(c, n)]; ok && *p == nil {
			*p = n
		}
	}
	return vps, sps, pps
}

func TestClips(t *testing.T) {
	t.Parallel()
	for _, tc := range clips {
		t.Run(tc.name, func(t *testing.T) {
			data := readClip(t, tc.file)
			nalus, err := splitAnnexB(data)
			if err != nil {
				t.Fatal(err)
			}
			// mediacommon's splitter is the reference (it keeps trailing zero bytes, we drop them).
			var ref h264.AnnexB
			if err := ref.Unmarshal(data); err != nil {
				t.Fatal(err)
			}
			if len(ref) != len(nalus) {
				t.Fatalf("got %d NAL units, mediacommon %d", len(nalus), len(ref))
			}
			for i := range ref {
				if !bytes.Equal(trimZeros(ref[i]), nalus[i]) {
					t.Fatalf("NAL unit %d differs from mediacommon's", i)
				}
			}

			// Pictures and keyframes: every 25th picture is a random access point.
			pictures := 0
			for _, n := range nalus {
				if !FirstSliceOfPicture(tc.codec, n) {
					continue
				}
				if got, want := IsRandomAccessNALU(tc.codec, n), pictures%25 == 0; got != want {
					t.Errorf("picture %d: keyframe %v, want %v", pictures, got, want)
				}
				pictures++
			}
			if pictures != tc.frames {
				t.Errorf("%d pictures, want %d", pictures, tc.frames)
			}

			vps, sps, pps := paramSets(tc.codec, nalus)
			info, err := ParseSPS(tc.codec, sps)
			if err != nil {
				t.Fatal(err)
			}
			if info.Width != tc.width || info.Height != tc.height {
				t.Errorf("size %dx%d, want %dx%d", info.Width, info.Height, tc.width, tc.height)
			}
			if fps, ok := info.FrameRate(); !ok || fps != tc.fps {
				t.Errorf("frame rate %v %v, want %v", fps, ok, tc.fps)
			}

			var rec []byte
			if tc.codec == H264 {
				rec, err = BuildAVCConfig([][]byte{sps}, [][]byte{pps})
			} else {
				rec, err = BuildHEVCConfig([][]byte{vps}, [][]byte{sps}, [][]byte{pps})
			}
			if err != nil {
				t.Fatal(err)
			}
			ps, err := ParseConfig(tc.codec, rec)
			if err != nil {
				t.Fatal(err)
			}
			if ps.LengthSize != 4 || !bytes.Equal(ps.SPS[0], sps) || !bytes.Equal(ps.PPS[0], pps) ||
				(tc.codec == H265 && !bytes.Equal(ps.VPS[0], vps)) {
				t.Errorf("record round trip: got %+v", ps)
			}

			avcc, err := AppendAVCC(nil, data)
			if err != nil {
				t.Fatal(err)
			}
			if !IsKeyframeAVCC(tc.codec, avcc) {
				t.Error("whole clip is not a keyframe")
			}
			back, err := appendAnnexB(nil, avcc)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := splitAnnexB(back)
			if len(again) != len(nalus) {
				t.Errorf("round trip: %d NAL units, want %d", len(again), len(nalus))
			}
		})
	}
}

func TestAnnexBCases(t *testing.T) {
	t.Parallel()
	for _, tc := range annexBCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitAnnexB(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			}
		})
	}
}

var annexBCases = []struct {
	name string
	in   []byte
	want [][]byte
	err  error
}{
	{name: "empty", in: nil, err: ErrNoStartCode},
	{name: "no start code", in: []byte{0x65, 1, 2}, err: ErrNoStartCode},
	{name: "garbage first", in: []byte{1, 0, 0, 1, 0x65}, err: ErrNoStartCode},
	{name: "start code only", in: []byte{0, 0, 1}, err: ErrNoNALUs},
	{name: "3-byte", in: []byte{0, 0, 1, 0x65, 0xAA}, want: [][]byte{{0x65, 0xAA}}},
	{name: "4-byte", in: []byte{0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2}, want: [][]byte{{0x67, 1}, {0x68, 2}}},
	{name: "mixed and empty", in: []byte{0, 0, 1, 0, 0, 1, 9, 0xF0, 0, 0, 1, 0x65, 0, 0, 3, 1}, want: [][]byte{{9, 0xF0}, {0x65, 0, 0, 3, 1}}},
	{name: "trailing zeros", in: []byte{0, 0, 0, 0, 1, 0x41, 7, 0, 0, 0, 0}, want: [][]byte{{0x41, 7}}},
}

// TestRecoveryPoint: an H.264 access unit with a recovery point SEI message (open GOP I pictures,
// periodic intra refresh) is a keyframe, wherever the message is among the SEI NAL unit's messages
// and whatever emulation prevention bytes its payloads hold; other SEI, and SEI cut short, are not.
func TestRecoveryPoint(t *testing.T) {
	t.Parallel()
	slice := []byte{0x41, 0x9A, 0x02} // a non-IDR slice
	cases := []struct {
		name string
		sei  []byte
		want bool
	}{
		{"recovery point", []byte{0x06, 6, 1, 0x84, 0x80}, true},
		{"after user data", []byte{0x06, 5, 3, 0xAA, 0xBB, 0xCC, 6, 1, 0x84, 0x80}, true},
		// A payload of 0, 0, 0: 0, 0, 3, 0 on the wire. Counted with the 3, the next message
		// would be read from the wrong byte.
		{"after emulation prevention", []byte{0x06, 5, 3, 0, 0, 3, 0, 6, 1, 0x84, 0x80}, true},
		{"payload type over 255", []byte{0x06, 0xFF, 6, 1, 0x84, 0x80}, false},
		{"user data alone", []byte{0x06, 5, 3, 0xAA, 0xBB, 0xCC, 0x80}, false},
		{"buffering period", []byte{0x06, 0, 1, 0x80, 0x80}, false},
		{"cut short", []byte{0x06, 5, 9, 0xAA}, false},
		{"not SEI", []byte{0x09, 6, 1, 0x84, 0x80}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsRecoveryPoint(H264, tc.sei); got != tc.want {
				t.Errorf("IsRecoveryPoint: %v, want %v", got, tc.want)
			}
			au := AppendLengthPrefixed(nil, tc.sei, slice)
			if got := IsKeyframeAVCC(H264, au); got != tc.want {
				t.Errorf("IsKeyframeAVCC: %v, want %v", got, tc.want)
			}
			if IsKeyframeAVCC(H265, au) {
				t.Error("IsKeyframeAVCC(H265): true, want false")
			}
		})
	}
}

func TestAVCCErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []byte
		err  error
	}{
		{name: "empty", in: nil, err: ErrNoNALUs},
		{name: "short length", in: []byte{0, 0, 1}, err: ErrBadLength},
		{name: "too long", in: []byte{0, 0, 0, 5, 1, 2}, err: ErrBadLength},
		{name: "zero lengths only", in: []byte{0, 0, 0, 0}, err: ErrNoNALUs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := ConvertLengthSize(dst, tc.in, 4)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if string(out) != "keep" {
				t.Errorf("dst changed to %q", out)
			}
		})
	}
}

func TestConversionsDoNotAllocate(t *testing.T) {
	data := readClip(t, "h264.h264")
	avcc := make([]byte, 0, len(data)+4096)
	converted := make([]byte, 0, len(data)+4096)
	allocs := testing.AllocsPerRun(20, func() {
		var err error
		if avcc, err = AppendAVCC(avcc[:0], data); err != nil {
			t.Fatal(err)
		}
		if converted, err = ConvertLengthSize(converted[:0], avcc, 4); err != nil {
			t.Fatal(err)
		}
		if !IsKeyframeAVCC(H264, avcc) {
			t.Fatal("not a keyframe")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func TestCodecID(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{H264, H265} {
		got, ok := FromCodecID(c.CodecID())
		if !ok || got != c {
			t.Errorf("%v: FromCodecID(%q) = %v, %v", c, c.CodecID(), got, ok)
		}
	}
	if H264.CodecID() != "V_MPEG4/ISO/AVC" || H265.CodecID() != "V_MPEGH/ISO/HEVC" || CodecIDAAC != "A_AAC" {
		t.Error("wrong Matroska CodecIDs")
	}
}

func TestParseAudioSpecificConfig(t *testing.T) {
	t.Parallel()
	// AAC LC, 48 kHz (index 3), mono: 00010 0011 0001 000
	c, err := ParseAudioSpecificConfig([]byte{0x11, 0x88})
	if err != nil {
		t.Fatal(err)
	}
	if c.ObjectType != 2 || c.SampleRate != 48000 || c.Channels != 1 {
		t.Errorf("got %+v", c)
	}
	if _, err := ParseAudioSpecificConfig(nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("empty config: error %v", err)
	}
}

// splitAnnexB returns the NAL units WalkAnnexB finds in b.
func splitAnnexB(b []byte) ([][]byte, error) {
	var nalus [][]byte
	err := WalkAnnexB(b, func(n []byte) error {
		nalus = append(nalus, n)
		return nil
	})
	return nalus, err
}

// appendAnnexB appends the 4-byte length-prefixed NAL units avcc to dst in Annex B form, each
// after a 00 00 00 01 start code: AppendAVCC's inverse, for round trips.
func appendAnnexB(dst, avcc []byte) ([]byte, error) {
	err := WalkAVCC(avcc, 4, func(n []byte) error {
		dst = append(append(dst, 0, 0, 0, 1), n...)
		return nil
	})
	return dst, err
}
