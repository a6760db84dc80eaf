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

// durationNS converts an unsigned nanosecond count, saturating at the time.Duration range.
func durationNS(v uint64) time.Duration {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(v)
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
func (t *Track) parseField(id uint32, v []byte) error {
	var err error
	var u uint64
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
	case IDTrackNumber, IDTrackUID, IDTrackType, IDDefaultDuration, IDCodecDelay, IDSeekPreRoll, IDPixelWidth, IDPixelHeight, IDChannels, IDBitDepth:
		if u, err = parseUint(v); err != nil {
			return err
		}
	}
	switch id {
	case IDTrackNumber:
		t.Number = u
	case IDTrackUID:
		t.UID = u
	case IDTrackType:
		t.Type = uint8(u)
	case IDDefaultDuration:
		t.DefaultDuration = durationNS(u)
	case IDCodecDelay:
		t.CodecDelay = durationNS(u)
	case IDSeekPreRoll:
		t.SeekPreRoll = durationNS(u)
	case IDPixelWidth:
		t.Width = uint32(u)
	case IDPixelHeight:
		t.Height = uint32(u)
	case IDChannels:
		t.Channels = uint8(u)
	case IDBitDepth:
		t.BitDepth = uint8(u)
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
