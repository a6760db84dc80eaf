package codec

import (
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// maxDimension bounds the picture sizes ParseSPS accepts (H.265 level 6.2 allows 8192x4320; a
// 16384 bound leaves room and rejects garbage that wraps around during cropping).
const maxDimension = 16384

// SPSInfo is what kvs takes from a sequence parameter set.
type SPSInfo struct {
	// Width and Height are the displayed picture size in pixels, after cropping.
	Width, Height int
	// FrameRateNum and FrameRateDen give the frame rate FrameRateNum/FrameRateDen frames per second
	// from the VUI timing info; both are 0 when the SPS carries none. H.264: time_scale /
	// (2*num_units_in_tick) (one frame is two fields); H.265: vui_time_scale / vui_num_units_in_tick.
	FrameRateNum, FrameRateDen uint64
}

// FrameRate returns the frame rate in frames per second, and false when the SPS carries no timing
// info.
func (s SPSInfo) FrameRate() (float64, bool) {
	if s.FrameRateNum == 0 || s.FrameRateDen == 0 {
		return 0, false
	}
	return float64(s.FrameRateNum) / float64(s.FrameRateDen), true
}

// ParseSPS parses the SPS NAL unit nalu (with its NAL unit header, without start code or length).
func ParseSPS(c Codec, nalu []byte) (SPSInfo, error) {
	var info SPSInfo
	var spsType int
	switch c {
	case H264:
		spsType = H264NALUSPS
	case H265:
		spsType = H265NALUSPS
	default:
		return info, fmt.Errorf("%w: unsupported codec %v", ErrInvalidSPS, c)
	}
	if t := NALUType(c, nalu); t != spsType {
		return info, fmt.Errorf("%w: %v NAL unit type %d is not an SPS (%d)", ErrInvalidSPS, c, t, spsType)
	}
	// The VUI timing info, 0 when there is none: a frame lasts ticks/timeScale seconds.
	var timeScale, ticks uint64
	var err error
	if c == H264 {
		var s h264.SPS
		if err = s.Unmarshal(nalu); err == nil {
			info.Width, info.Height = s.Width(), s.Height()
			if fc := s.FrameCropping; fc != nil && (s.ChromaFormatIdc == 0 || s.SeparateColourPlaneFlag) {
				// ChromaArrayType 0: CropUnitX is 1 (H.264 eq. 7-19); mediacommon takes 0 and
				// leaves the width uncropped.
				info.Width = (int(s.PicWidthInMbsMinus1)+1)*16 - int(fc.LeftOffset) - int(fc.RightOffset)
			}
			if vui := s.VUI; vui != nil && vui.TimingInfo != nil {
				// One frame is two fields of num_units_in_tick each.
				timeScale, ticks = uint64(vui.TimingInfo.TimeScale), 2*uint64(vui.TimingInfo.NumUnitsInTick)
			}
		}
	} else {
		var s h265.SPS
		if err = s.Unmarshal(nalu); err == nil {
			info.Width, info.Height = s.Width(), s.Height()
			if vui := s.VUI; vui != nil && vui.TimingInfo != nil {
				timeScale, ticks = uint64(vui.TimingInfo.TimeScale), uint64(vui.TimingInfo.NumUnitsInTick)
			}
		}
	}
	if err != nil {
		return SPSInfo{}, fmt.Errorf("%w: %v: %v", ErrInvalidSPS, c, err)
	}
	if timeScale != 0 && ticks != 0 {
		info.FrameRateNum, info.FrameRateDen = timeScale, ticks
	}
	if info.Width <= 0 || info.Height <= 0 || info.Width > maxDimension || info.Height > maxDimension {
		return info, fmt.Errorf("%w: picture size %dx%d out of range", ErrInvalidSPS, info.Width, info.Height)
	}
	return info, nil
}
