package codec

// H.264 NAL unit types (ITU-T H.264 table 7-1) that kvs looks at.
const (
	H264NALUNonIDR = 1
	H264NALUIDR    = 5
	H264NALUSEI    = 6
	H264NALUSPS    = 7
	H264NALUPPS    = 8
	H264NALUAUD    = 9
)

// H.265 NAL unit types (ITU-T H.265 table 7-1) that kvs looks at.
const (
	H265NALUBLAWLP    = 16 // first IRAP type
	H265NALUIDRWRADL  = 19
	H265NALUIDRNLP    = 20
	H265NALUCRA       = 21
	H265NALUIRAPMax   = 23 // last (reserved) IRAP type
	H265NALUVPS       = 32
	H265NALUSPS       = 33
	H265NALUPPS       = 34
	H265NALUAUD       = 35
	H265NALUPrefixSEI = 39
)

// NALUType returns the nal_unit_type of nalu (5 bits for H.264, 6 for H.265), or -1 when nalu is
// too short to carry a header.
func NALUType(c Codec, nalu []byte) int {
	switch c {
	case H264:
		if len(nalu) < 1 {
			return -1
		}
		return int(nalu[0] & 0x1F)
	case H265:
		if len(nalu) < 2 {
			return -1
		}
		return int(nalu[0]>>1) & 0x3F
	}
	return -1
}

// IsVCL reports whether nalu carries coded slice data (H.264 types 1-5, H.265 types 0-31).
func IsVCL(c Codec, nalu []byte) bool {
	t := NALUType(c, nalu)
	switch c {
	case H264:
		return t >= 1 && t <= 5
	case H265:
		return t >= 0 && t <= 31
	}
	return false
}

// IsRandomAccessNALU reports whether nalu is a slice of a picture a decoder can start at: an H.264
// IDR slice, or an H.265 IRAP slice (BLA, IDR or CRA, types 16-23).
func IsRandomAccessNALU(c Codec, nalu []byte) bool {
	t := NALUType(c, nalu)
	switch c {
	case H264:
		return t == H264NALUIDR
	case H265:
		return t >= H265NALUBLAWLP && t <= H265NALUIRAPMax
	}
	return false
}

// FirstSliceOfPicture reports whether the VCL NAL unit nalu is the first slice of its picture:
// H.264 first_mb_in_slice == 0, H.265 first_slice_segment_in_pic_flag == 1. Both are the first bit
// after the NAL unit header (ue(v) 0 is the single bit 1). It returns false for non-VCL NAL units.
func FirstSliceOfPicture(c Codec, nalu []byte) bool {
	if !IsVCL(c, nalu) {
		return false
	}
	hdr := 1
	if c == H265 {
		hdr = 2
	}
	return len(nalu) > hdr && nalu[hdr]&0x80 != 0
}

// StartsAccessUnit reports whether nalu, when it follows a VCL NAL unit, begins a new access unit
// (H.264 7.4.1.2.3, H.265 7.4.2.4.4): an access unit delimiter, parameter set, prefix SEI or
// reserved prefix type, or the first slice of a new picture.
func StartsAccessUnit(c Codec, nalu []byte) bool {
	t := NALUType(c, nalu)
	switch c {
	case H264:
		switch {
		case t == H264NALUAUD, t == H264NALUSPS, t == H264NALUPPS, t == H264NALUSEI, t >= 14 && t <= 18:
			return true
		}
	case H265:
		switch {
		case t >= H265NALUVPS && t <= H265NALUAUD, t == H265NALUPrefixSEI, t >= 41 && t <= 44, t >= 48 && t <= 55:
			return true
		}
	}
	return FirstSliceOfPicture(c, nalu)
}

// IsKeyframeAVCC reports whether the access unit au, 4-byte length-prefixed NAL units, is a random
// access point: whether it holds a random access slice (see IsRandomAccessNALU) or, for H.264, a
// recovery point SEI message (IsRecoveryPoint): the I pictures of open GOPs and the start of each
// cycle of periodic intra refresh, which have no IDR picture after the first. ffmpeg marks both
// keyframes, and decoders start there. One before a malformed length still counts. It does not
// allocate.
func IsKeyframeAVCC(c Codec, au []byte) bool {
	it := newAVCCIter(au, 4)
	for n := it.next(); n != nil; n = it.next() {
		if IsRandomAccessNALU(c, n) || IsRecoveryPoint(c, n) {
			return true
		}
	}
	return false
}

// seiRecoveryPoint is the payloadType of the recovery point SEI message (H.264 D.1.8).
const seiRecoveryPoint = 6

// IsRecoveryPoint reports whether nalu is an H.264 SEI NAL unit holding a recovery point SEI
// message (H.264 7.3.2.3.1, D.1.8): decoding that starts at its access unit gives correct
// pictures from the recovery point on. It is false for H.265 and for malformed SEI. It does not
// allocate.
func IsRecoveryPoint(c Codec, nalu []byte) bool {
	if c != H264 || NALUType(c, nalu) != H264NALUSEI {
		return false
	}
	r := rbspReader{b: nalu[1:]}
	for {
		typ, ok := r.seiValue()
		if !ok {
			return false
		}
		size, ok := r.seiValue()
		if !ok {
			return false
		}
		if typ == seiRecoveryPoint {
			return true
		}
		for range size {
			if _, ok := r.next(); !ok {
				return false
			}
		}
	}
}

// rbspReader reads the RBSP bytes of a NAL unit's payload, leaving out emulation prevention bytes.
type rbspReader struct {
	b     []byte
	i     int
	zeros int // zero bytes just read
}

func (r *rbspReader) next() (byte, bool) {
	for r.i < len(r.b) {
		c := r.b[r.i]
		r.i++
		if r.zeros >= 2 && c == 3 {
			r.zeros = 0
			continue
		}
		if c == 0 {
			r.zeros++
		} else {
			r.zeros = 0
		}
		return c, true
	}
	return 0, false
}

// seiValue reads an SEI payloadType or payloadSize: 0xFF bytes of 255 each, then the last byte.
func (r *rbspReader) seiValue() (int, bool) {
	v := 0
	for {
		c, ok := r.next()
		if !ok {
			return 0, false
		}
		v += int(c)
		if c != 0xFF {
			return v, true
		}
	}
}
