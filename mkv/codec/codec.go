// Package codec holds the H.264, H.265 and AAC helpers kvs needs to put coded video into Matroska:
// Annex B ↔ length-prefixed NAL unit conversion, decoder configuration records (avcC, hvcC) for
// CodecPrivate and back, keyframe detection, and picture size and frame rate from the SPS.
//
// Parsing of parameter sets is delegated to github.com/bluenviron/mediacommon; this package adds the
// glue Matroska needs and validates results so that malformed input gives an error, never a panic.
// All functions are safe for concurrent use; none retains its arguments.
package codec

import (
	"errors"
	"fmt"
)

// Matroska CodecIDs of the codecs kvs understands.
const (
	CodecIDH264 = "V_MPEG4/ISO/AVC"
	CodecIDH265 = "V_MPEGH/ISO/HEVC"
	CodecIDAAC  = "A_AAC"
	CodecIDVP8  = "V_VP8"
	CodecIDVP9  = "V_VP9"
	CodecIDOpus = "A_OPUS"
)

// Codec is a video codec whose bitstream is made of NAL units.
type Codec uint8

// Codecs with NAL unit bitstreams. The zero Codec is not valid.
const (
	H264 Codec = iota + 1
	H265
)

// String returns "H.264" or "H.265".
func (c Codec) String() string {
	switch c {
	case H264:
		return "H.264"
	case H265:
		return "H.265"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}

// CodecID returns the Matroska CodecID of c, or "" for an invalid Codec.
func (c Codec) CodecID() string {
	switch c {
	case H264:
		return CodecIDH264
	case H265:
		return CodecIDH265
	}
	return ""
}

// FromCodecID returns the Codec whose Matroska CodecID is id; ok is false for any other CodecID.
func FromCodecID(id string) (c Codec, ok bool) {
	switch id {
	case CodecIDH264:
		return H264, true
	case CodecIDH265:
		return H265, true
	}
	return 0, false
}

// Errors returned for malformed bitstreams. They are wrapped with details; match with errors.Is.
var (
	// ErrNoStartCode means Annex B input did not begin with a 00 00 01 or 00 00 00 01 start code.
	ErrNoStartCode = errors.New("not Annex B: no start code at the beginning")
	// ErrNoNALUs means the input held no NAL unit at all.
	ErrNoNALUs = errors.New("no NAL units")
	// ErrBadLength means a length-prefixed NAL unit is longer than the data left.
	ErrBadLength = errors.New("NAL unit length runs past the end of the data")
	// ErrInvalidConfig means an avcC or hvcC record is malformed or lacks a parameter set.
	ErrInvalidConfig = errors.New("invalid decoder configuration record")
	// ErrInvalidSPS means a sequence parameter set could not be parsed or gives an impossible picture.
	ErrInvalidSPS = errors.New("invalid sequence parameter set")
)
