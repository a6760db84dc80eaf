package mkv

// The level-1 elements the Reader materializes: EBML header, Info, Tracks and Tags.

import (
	"math"
	"time"
)

func parseEBMLHeader(data []byte) (string, error) {
	docType := "matroska"
	err := children(data, func(id uint32, v []byte) error {
		if id == IDDocType {
			docType = parseString(v)
		}
		return nil
	})
	return docType, err
}

func parseInfo(data []byte) (uint64, error) {
	scale := uint64(DefaultTimecodeScale)
	err := children(data, func(id uint32, v []byte) error {
		if id == IDTimecodeScale {
			s, err := parseUint(v)
			if err != nil {
				return err
			}
			if s != 0 {
				scale = s
			}
		}
		return nil
	})
	return scale, err
}

// parseDuration parses an unsigned integer element counting nanoseconds, saturating at the
// time.Duration range.
func parseDuration(v []byte) (time.Duration, error) {
	u, err := parseUint(v)
	return time.Duration(min(u, math.MaxInt64)), err
}

// parseSmallUint parses an unsigned integer element into a narrower field, keeping the low bits.
func parseSmallUint[T uint8 | uint32](v []byte) (T, error) {
	u, err := parseUint(v)
	return T(u), err
}

func parseTracks(data []byte) ([]Track, error) {
	var tracks []Track
	err := children(data, func(id uint32, v []byte) error {
		if id != IDTrackEntry {
			return nil
		}
		var t Track
		if err := children(v, t.parseField); err != nil {
			return err
		}
		tracks = append(tracks, t)
		return nil
	})
	return tracks, err
}

// parseField sets the field that element id, a child of the TrackEntry or of its Video or Audio
// element (Matroska IDs are unique, so one switch serves the three levels), holds.
func (t *Track) parseField(id uint32, v []byte) (err error) {
	switch id {
	case IDVideo, IDAudio:
		return children(v, t.parseField)
	case IDContentEncodings:
		// Compressed (zlib, header stripping) or encrypted frames: the Reader would give them as
		// stored, and the writers drop the ContentEncodings; refuse the track rather than store
		// media that no player can decode.
		return errContentEncoding
	case IDCodecID:
		t.CodecID = parseString(v)
	case IDCodecPrivate:
		t.CodecPrivate = append([]byte(nil), v...)
	case IDTrackName:
		t.Name = parseString(v)
	case IDSamplingFreq:
		t.SamplingRate, err = parseFloat(v)
	case IDTrackNumber:
		t.Number, err = parseUint(v)
	case IDTrackUID:
		t.UID, err = parseUint(v)
	case IDTrackType:
		t.Type, err = parseSmallUint[uint8](v)
	case IDDefaultDuration:
		t.DefaultDuration, err = parseDuration(v)
	case IDCodecDelay:
		t.CodecDelay, err = parseDuration(v)
	case IDSeekPreRoll:
		t.SeekPreRoll, err = parseDuration(v)
	case IDPixelWidth:
		t.Width, err = parseSmallUint[uint32](v)
	case IDPixelHeight:
		t.Height, err = parseSmallUint[uint32](v)
	case IDChannels:
		t.Channels, err = parseSmallUint[uint8](v)
	case IDBitDepth:
		t.BitDepth, err = parseSmallUint[uint8](v)
	}
	return err
}

const maxTagDepth = 32

// TagValue returns the TagString of the first SimpleTag called name (nested ones included) in
// tags, the data of a Tags element; false when there is none or tags does not parse.
func TagValue(tags []byte, name string) (string, bool) {
	parsed, err := parseTags(tags)
	if err != nil {
		return "", false
	}
	for i := range parsed {
		if t := findTag(parsed[i].SimpleTags, name); t != nil {
			return t.Value, true
		}
	}
	return "", false
}

func parseTags(data []byte) ([]Tag, error) {
	var tags []Tag
	err := children(data, func(id uint32, v []byte) error {
		if id != IDTag {
			return nil
		}
		var tag Tag
		err := children(v, func(id uint32, v []byte) error {
			if id != IDSimpleTag {
				return nil // Targets and unknown elements
			}
			st, err := parseSimpleTag(v, 0)
			if err != nil {
				return err
			}
			tag.SimpleTags = append(tag.SimpleTags, st)
			return nil
		})
		if err != nil {
			return err
		}
		tags = append(tags, tag)
		return nil
	})
	return tags, err
}

func parseSimpleTag(data []byte, depth int) (SimpleTag, error) {
	var st SimpleTag
	if depth >= maxTagDepth {
		return st, errTooDeep
	}
	err := children(data, func(id uint32, v []byte) error {
		switch id {
		case IDTagName:
			st.Name = parseString(v)
		case IDTagString:
			st.Value = parseString(v)
		case IDTagBinary:
			st.Binary = append([]byte{}, v...)
		case IDSimpleTag:
			c, err := parseSimpleTag(v, depth+1)
			if err != nil {
				return err
			}
			st.Children = append(st.Children, c)
		}
		return nil
	})
	return st, err
}
