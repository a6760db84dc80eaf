package codec

import (
	"encoding/binary"
	"fmt"

	"github.com/Eyevinn/mp4ff/avc"
	"github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/hevc"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// ParameterSets are the parameter sets of a decoder configuration record, and the size of the NAL
// unit length prefix the record declares for the track's frames.
type ParameterSets struct {
	// VPS is empty for H.264.
	VPS, SPS, PPS [][]byte
	// LengthSize is the number of bytes before each NAL unit in a frame: 1, 2 or 4.
	LengthSize int
}

// BuildAVCConfig returns an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1, the avcC box
// body and Matroska's CodecPrivate for V_MPEG4/ISO/AVC) holding sps and pps, with 4-byte NAL unit
// lengths. Profile and level come from the first SPS, which must parse.
func BuildAVCConfig(sps, pps [][]byte) ([]byte, error) {
	if len(sps) == 0 || len(pps) == 0 {
		return nil, fmt.Errorf("avcC: need at least one SPS and one PPS, have %d and %d", len(sps), len(pps))
	}
	if len(sps) > 31 || len(pps) > 255 {
		return nil, fmt.Errorf("avcC: too many parameter sets (%d SPS, max 31; %d PPS, max 255)", len(sps), len(pps))
	}
	if err := checkPS(H264, H264NALUPPS, sps, pps); err != nil {
		return nil, fmt.Errorf("avcC: %w", err)
	}
	var s h264.SPS
	if err := s.Unmarshal(sps[0]); err != nil {
		return nil, fmt.Errorf("avcC: %w: %v", ErrInvalidSPS, err)
	}
	rec := avc.DecConfRec{
		AVCProfileIndication: sps[0][1],
		ProfileCompatibility: sps[0][2],
		AVCLevelIndication:   sps[0][3],
		SPSnalus:             sps,
		PPSnalus:             pps,
		ChromaFormat:         1,
	}
	if s.ChromaFormatIdc != 0 || s.ProfileIdc >= 100 {
		rec.ChromaFormat = byte(s.ChromaFormatIdc & 3)
		rec.BitDepthLumaMinus1 = byte(s.BitDepthLumaMinus8 & 7)
		rec.BitDepthChromaMinus1 = byte(s.BitDepthChromaMinus8 & 7)
	}
	sw := bits.NewFixedSliceWriter(int(rec.Size()))
	if err := rec.EncodeSW(sw); err != nil {
		return nil, fmt.Errorf("avcC: %w", err)
	}
	return sw.Bytes(), nil
}

// BuildHEVCConfig returns an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1, the hvcC box
// body and Matroska's CodecPrivate for V_MPEGH/ISO/HEVC) holding vps, sps and pps, with 4-byte NAL
// unit lengths. Profile, tier, level and format come from the first SPS, which must parse. The
// arrays are marked incomplete (array_completeness 0, as ffmpeg writes them): frames may carry
// parameter sets in band too.
func BuildHEVCConfig(vps, sps, pps [][]byte) ([]byte, error) {
	if len(vps) == 0 || len(sps) == 0 || len(pps) == 0 {
		return nil, fmt.Errorf("hvcC: need at least one VPS, SPS and PPS, have %d, %d and %d", len(vps), len(sps), len(pps))
	}
	for _, set := range [][][]byte{vps, sps, pps} {
		if len(set) > 0xFFFF {
			return nil, fmt.Errorf("hvcC: %d parameter sets of one type, max 65535", len(set))
		}
	}
	if err := checkPS(H265, H265NALUVPS, vps); err != nil {
		return nil, fmt.Errorf("hvcC: %w", err)
	}
	if err := checkPS(H265, H265NALUPPS, sps, pps); err != nil {
		return nil, fmt.Errorf("hvcC: %w", err)
	}
	var s h265.SPS
	if err := s.Unmarshal(sps[0]); err != nil {
		return nil, fmt.Errorf("hvcC: %w: %v", ErrInvalidSPS, err)
	}
	// general_profile_tier_level is byte-aligned at the start of the SPS RBSP: after the 2-byte NAL
	// header and one byte of VPS id / max_sub_layers_minus1 / temporal_id_nesting_flag come profile
	// space+tier+idc (1), compatibility flags (4), constraint flags (6) and level (1).
	rbsp := h264.EmulationPreventionRemove(sps[0])
	if len(rbsp) < 15 {
		return nil, fmt.Errorf("hvcC: %w: %d bytes, too short", ErrInvalidSPS, len(rbsp))
	}
	ptl := rbsp[3:15]
	constraint := uint64(binary.BigEndian.Uint16(ptl[5:7]))<<32 | uint64(binary.BigEndian.Uint32(ptl[7:11]))
	rec := hevc.DecConfRec{
		ConfigurationVersion:             1,
		GeneralProfileSpace:              ptl[0] >> 6,
		GeneralTierFlag:                  ptl[0]&0x20 != 0,
		GeneralProfileIDC:                ptl[0] & 0x1F,
		GeneralProfileCompatibilityFlags: binary.BigEndian.Uint32(ptl[1:5]),
		GeneralConstraintIndicatorFlags:  constraint,
		GeneralLevelIDC:                  ptl[11],
		ChromaFormatIDC:                  byte(s.ChromaFormatIdc & 3),
		BitDepthLumaMinus8:               byte(s.BitDepthLumaMinus8 & 7),
		BitDepthChromaMinus8:             byte(s.BitDepthChromaMinus8 & 7),
		NumTemporalLayers:                (s.MaxSubLayersMinus1 + 1) & 7,
		LengthSizeMinusOne:               3,
		NaluArrays: []hevc.NaluArray{
			hevc.NewNaluArray(false, hevc.NALU_VPS, vps),
			hevc.NewNaluArray(false, hevc.NALU_SPS, sps),
			hevc.NewNaluArray(false, hevc.NALU_PPS, pps),
		},
	}
	if s.TemporalIDNestingFlag {
		rec.TemporalIDNested = 1
	}
	sw := bits.NewFixedSliceWriter(int(rec.Size()))
	if err := rec.EncodeSW(sw); err != nil {
		return nil, fmt.Errorf("hvcC: %w", err)
	}
	return sw.Bytes(), nil
}

// checkPS checks that the parameter sets have consecutive NAL unit types ending at last: every NAL
// unit of sets[i] has type last-(len(sets)-1-i) (SPS, PPS for H.264; VPS alone, or SPS, PPS for
// H.265), and that each fits a 16-bit length.
func checkPS(c Codec, last int, sets ...[][]byte) error {
	for i, set := range sets {
		want := last - (len(sets) - 1 - i)
		for _, n := range set {
			if t := NALUType(c, n); t != want {
				return fmt.Errorf("%w: parameter set has NAL unit type %d, want %d", ErrInvalidConfig, t, want)
			}
			if len(n) > 0xFFFF {
				return fmt.Errorf("%w: parameter set of %d bytes, max 65535", ErrInvalidConfig, len(n))
			}
		}
	}
	return nil
}

// ParseAVCConfig parses an AVCDecoderConfigurationRecord (avcC / CodecPrivate of V_MPEG4/ISO/AVC).
// The parameter sets returned are sub-slices of b. Bytes after the PPS list (the high-profile
// chroma and bit depth fields, SPS extensions) are not needed and are ignored.
func ParseAVCConfig(b []byte) (ParameterSets, error) {
	ps, r, err := recordHeader("avcC", b, 6, 4)
	if err != nil {
		return ps, err
	}
	ps.SPS = r.nalus(int(b[5]&0x1F), 1)
	ps.PPS = r.nalus(int(r.u8()), 0)
	if r.err != nil {
		return ps, fmt.Errorf("%w: avcC: %v", ErrInvalidConfig, r.err)
	}
	if len(ps.SPS) == 0 || len(ps.PPS) == 0 {
		return ps, fmt.Errorf("%w: avcC has %d SPS and %d PPS, need at least one of each", ErrInvalidConfig, len(ps.SPS), len(ps.PPS))
	}
	if err := checkPS(H264, H264NALUPPS, ps.SPS, ps.PPS); err != nil {
		return ps, fmt.Errorf("avcC: %w", err)
	}
	return ps, nil
}

// ParseHEVCConfig parses an HEVCDecoderConfigurationRecord (hvcC / CodecPrivate of
// V_MPEGH/ISO/HEVC). The parameter sets returned are sub-slices of b; arrays of other NAL unit types
// (SEI) are skipped.
func ParseHEVCConfig(b []byte) (ParameterSets, error) {
	ps, r, err := recordHeader("hvcC", b, 23, 21)
	if err != nil {
		return ps, err
	}
	arrays := int(r.u8())
	for i := 0; i < arrays && r.err == nil; i++ {
		typ := int(r.u8() & 0x3F)
		n := int(r.u16())
		nalus := r.nalus(n, 0)
		switch typ {
		case H265NALUVPS:
			ps.VPS = append(ps.VPS, nalus...)
		case H265NALUSPS:
			ps.SPS = append(ps.SPS, nalus...)
		case H265NALUPPS:
			ps.PPS = append(ps.PPS, nalus...)
		}
	}
	if r.err != nil {
		return ps, fmt.Errorf("%w: hvcC: %v", ErrInvalidConfig, r.err)
	}
	if len(ps.VPS) == 0 || len(ps.SPS) == 0 || len(ps.PPS) == 0 {
		return ps, fmt.Errorf("%w: hvcC has %d VPS, %d SPS and %d PPS, need at least one of each",
			ErrInvalidConfig, len(ps.VPS), len(ps.SPS), len(ps.PPS))
	}
	if err := checkPS(H265, H265NALUVPS, ps.VPS); err != nil {
		return ps, fmt.Errorf("hvcC: %w", err)
	}
	if err := checkPS(H265, H265NALUPPS, ps.SPS, ps.PPS); err != nil {
		return ps, fmt.Errorf("hvcC: %w", err)
	}
	return ps, nil
}

// recordHeader checks what avcC and hvcC share: at least minLen bytes, configurationVersion 1 and
// lengthSizeMinusOne (the low two bits of the byte at lengthAt) not 2. It returns the NAL unit
// length size and a reader at the byte after lengthAt.
func recordHeader(name string, b []byte, minLen, lengthAt int) (ParameterSets, *recordReader, error) {
	var ps ParameterSets
	if len(b) < minLen {
		return ps, nil, fmt.Errorf("%w: %s of %d bytes, need at least %d", ErrInvalidConfig, name, len(b), minLen)
	}
	if b[0] != 1 {
		return ps, nil, fmt.Errorf("%w: %s configurationVersion %d, want 1", ErrInvalidConfig, name, b[0])
	}
	ps.LengthSize = int(b[lengthAt]&3) + 1
	if ps.LengthSize == 3 {
		return ps, nil, fmt.Errorf("%w: %s NAL unit length size 3 is not allowed", ErrInvalidConfig, name)
	}
	return ps, &recordReader{b: b, pos: lengthAt + 1}, nil
}

// ParseConfig parses the CodecPrivate of an H.264 or H.265 track.
func ParseConfig(c Codec, b []byte) (ParameterSets, error) {
	switch c {
	case H264:
		return ParseAVCConfig(b)
	case H265:
		return ParseHEVCConfig(b)
	}
	return ParameterSets{}, fmt.Errorf("%w: unsupported codec %v", ErrInvalidConfig, c)
}

// recordReader reads big-endian fields of a configuration record, remembering the first error.
type recordReader struct {
	b   []byte
	pos int
	err error
}

func (r *recordReader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if len(r.b)-r.pos < n {
		r.err = fmt.Errorf("truncated at byte %d: need %d more, have %d", r.pos, n, len(r.b)-r.pos)
		return false
	}
	return true
}

func (r *recordReader) u8() byte {
	if !r.need(1) {
		return 0
	}
	r.pos++
	return r.b[r.pos-1]
}

func (r *recordReader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	r.pos += 2
	return binary.BigEndian.Uint16(r.b[r.pos-2:])
}

// nalus reads n 16-bit length-prefixed NAL units; skip bytes are skipped first (the count byte of
// the avcC SPS list, already decoded by the caller).
func (r *recordReader) nalus(n, skip int) [][]byte {
	if !r.need(skip) {
		return nil
	}
	r.pos += skip
	var out [][]byte
	for i := 0; i < n; i++ {
		l := int(r.u16())
		if !r.need(l) {
			return out
		}
		if l > 0 {
			out = append(out, r.b[r.pos:r.pos+l:r.pos+l])
		}
		r.pos += l
	}
	return out
}

// AudioSpecificConfig is what kvs takes from an MPEG-4 AudioSpecificConfig (A_AAC CodecPrivate,
// the DecoderSpecificInfo of an MP4 esds box).
type AudioSpecificConfig struct {
	ObjectType int // 2 = AAC LC
	SampleRate int // Hz
	Channels   int
}

// ParseAudioSpecificConfig parses an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
func ParseAudioSpecificConfig(b []byte) (AudioSpecificConfig, error) {
	var c mpeg4audio.AudioSpecificConfig
	if err := c.Unmarshal(b); err != nil {
		return AudioSpecificConfig{}, fmt.Errorf("%w: AudioSpecificConfig: %v", ErrInvalidConfig, err)
	}
	return AudioSpecificConfig{ObjectType: int(c.Type), SampleRate: c.SampleRate, Channels: c.ChannelCount}, nil
}
