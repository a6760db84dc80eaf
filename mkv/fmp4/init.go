package fmp4

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// Errors for tracks that cannot be carried in fragmented MP4. They come wrapped in a *TrackError;
// match with errors.Is. The server maps them to the KVS exceptions of the same names.
var (
	// ErrUnsupportedCodec: the track's codec is not H.264, H.265 or AAC, or the tracks hold no video
	// track (UnsupportedStreamMediaTypeException).
	ErrUnsupportedCodec = errors.New("fmp4: unsupported codec")
	// ErrMissingCodecPrivate: the track has no CodecPrivate (MissingCodecPrivateDataException).
	ErrMissingCodecPrivate = errors.New("fmp4: missing codec private data")
	// ErrInvalidCodecPrivate: the CodecPrivate does not parse as the codec's configuration record
	// (InvalidCodecPrivateDataException).
	ErrInvalidCodecPrivate = errors.New("fmp4: invalid codec private data")
)

// TrackError reports a Matroska track that cannot become an MP4 track. Err is one of the
// sentinels above, possibly wrapping the parser's error.
type TrackError struct {
	Track   uint64 // Matroska TrackNumber
	CodecID string
	Err     error
}

func (e *TrackError) Error() string {
	return fmt.Sprintf("fmp4: track %d (%s): %v", e.Track, e.CodecID, e.Err)
}

func (e *TrackError) Unwrap() error { return e.Err }

// Timescales of the MP4 tracks: 90 kHz for video (the MPEG convention, exact for millisecond
// timecodes and for common frame rates), the sampling rate for audio.
const (
	VideoTimescale = 90000
	// defaultAudioRate is used when neither the AudioSpecificConfig nor the track gives a rate.
	defaultAudioRate = 48000
)

// track is one Matroska track mapped to an MP4 track.
type track struct {
	number    uint64 // Matroska TrackNumber
	id        uint32 // MP4 track_ID: 1, 2, ... in the order of the Matroska tracks
	video     bool
	timescale uint32
	// defaultDuration is the Matroska DefaultDuration in timescale units (0: none).
	defaultDuration int64
	// fallback is the duration of a lone last sample when nothing better is known.
	fallback int64
	entry    string // sample entry: avc1, hvc1, mp4a
	codecs   string // RFC 6381 codecs parameter
	config   []byte // avcC/hvcC body, AudioSpecificConfig
	width    int
	height   int
	channels int
	rate     int
}

// layout maps tracks to MP4 tracks. Every track must be H.264, H.265 or AAC with a valid
// CodecPrivate, and one of them must be video, as KVS requires for HLS, DASH and GetClip.
func layout(tracks []mkv.Track) ([]track, error) {
	out := make([]track, 0, len(tracks))
	hasVideo := false
	for i := range tracks {
		t, err := mapTrack(&tracks[i])
		if err != nil {
			return nil, err
		}
		t.id = uint32(len(out) + 1)
		hasVideo = hasVideo || t.video
		out = append(out, t)
	}
	if !hasVideo {
		return nil, &TrackError{Err: fmt.Errorf("%w: no H.264 or H.265 video track", ErrUnsupportedCodec)}
	}
	return out, nil
}

func mapTrack(mt *mkv.Track) (track, error) {
	t := track{number: mt.Number}
	fail := func(err error) (track, error) {
		return track{}, &TrackError{Track: mt.Number, CodecID: mt.CodecID, Err: err}
	}
	var c codec.Codec
	switch mt.CodecID {
	case codec.CodecIDH264:
		c, t.entry = codec.H264, "avc1"
	case codec.CodecIDH265:
		c, t.entry = codec.H265, "hvc1"
	case codec.CodecIDAAC:
		t.entry = "mp4a"
	default:
		return fail(ErrUnsupportedCodec)
	}
	if len(mt.CodecPrivate) == 0 {
		return fail(ErrMissingCodecPrivate)
	}
	if t.entry == "mp4a" {
		asc, err := codec.ParseAudioSpecificConfig(mt.CodecPrivate)
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrInvalidCodecPrivate, err))
		}
		t.rate = asc.SampleRate
		if t.rate <= 0 || t.rate > 0xFFFF {
			// The sample entry holds the rate in 16 bits; fall back to the container's value.
			t.rate = int(mt.SamplingRate)
		}
		if t.rate <= 0 || t.rate > 0xFFFF {
			t.rate = defaultAudioRate
		}
		t.channels = asc.Channels
		if t.channels <= 0 {
			t.channels = int(mt.Channels)
		}
		if t.channels <= 0 {
			t.channels = 2
		}
		t.timescale = uint32(t.rate)
		t.fallback = 1024 // one AAC frame
		t.config = mt.CodecPrivate
		// The codecs parameter names the record's first audio object type (RFC 6381 3.3, as
		// ffmpeg's HLS and DASH muxers write it): 5 (SBR) or 29 (PS) for HE-AAC signalled
		// explicitly, whose core, asc.ObjectType, is AAC LC (2). The record parsed, so the
		// first type is one of those and fits its 5 bits.
		t.codecs = fmt.Sprintf("mp4a.40.%d", mt.CodecPrivate[0]>>3)
	} else {
		ps, err := codec.ParseConfig(c, mt.CodecPrivate)
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrInvalidCodecPrivate, err))
		}
		t.video = true
		t.timescale = VideoTimescale
		t.fallback = VideoTimescale / 30
		t.width, t.height = int(mt.Width), int(mt.Height)
		if info, err := codec.ParseSPS(c, ps.SPS[0]); err == nil {
			t.width, t.height = info.Width, info.Height
		}
		if t.width <= 0 || t.height <= 0 || t.width > 0xFFFF || t.height > 0xFFFF {
			return fail(fmt.Errorf("%w: no usable picture size (SPS or PixelWidth/PixelHeight)", ErrInvalidCodecPrivate))
		}
		if c == codec.H264 {
			t.config = mt.CodecPrivate
			sps := ps.SPS[0]
			t.codecs = fmt.Sprintf("avc1.%02X%02X%02X", sps[1], sps[2], sps[3])
		} else {
			t.config = completeHEVCArrays(mt.CodecPrivate)
			t.codecs = hevcCodecs(mt.CodecPrivate)
		}
	}
	if mt.DefaultDuration > 0 {
		t.defaultDuration = mulDivRound(int64(mt.DefaultDuration), int64(t.timescale), 1e9)
	}
	return t, nil
}

// completeHEVCArrays returns a copy of an hvcC record (already validated by ParseHEVCConfig)
// with array_completeness set on its VPS, SPS and PPS arrays, as the hvc1 sample entry requires
// (ISO/IEC 14496-15 8.4.1). Parameter sets repeated in band stay valid: decoders accept identical
// copies.
func completeHEVCArrays(rec []byte) []byte {
	out := bytes.Clone(rec)
	if len(out) < 23 {
		return out
	}
	pos := 23
	for range int(out[22]) {
		if pos+3 > len(out) {
			break
		}
		switch int(out[pos] & 0x3F) {
		case codec.H265NALUVPS, codec.H265NALUSPS, codec.H265NALUPPS:
			out[pos] |= 0x80
		}
		n := int(out[pos+1])<<8 | int(out[pos+2])
		pos += 3
		for range n {
			if pos+2 > len(out) {
				return out
			}
			pos += 2 + (int(out[pos])<<8 | int(out[pos+1]))
		}
	}
	return out
}

// hevcCodecs returns the RFC 6381 codecs parameter of an hvc1 track from its hvcC record
// (ISO/IEC 14496-15 Annex E.3): hvc1.<space><profile>.<compat, bit-reversed hex>.<tier><level>
// then the constraint bytes without trailing zeros.
func hevcCodecs(rec []byte) string {
	var sb strings.Builder
	sb.WriteString("hvc1.")
	if space := rec[1] >> 6; space > 0 {
		sb.WriteByte('A' + space - 1)
	}
	fmt.Fprintf(&sb, "%d.", rec[1]&0x1F)
	compat := uint32(rec[2])<<24 | uint32(rec[3])<<16 | uint32(rec[4])<<8 | uint32(rec[5])
	var rev uint32
	for i := range 32 {
		if compat&(1<<i) != 0 {
			rev |= 1 << (31 - i)
		}
	}
	fmt.Fprintf(&sb, "%X.", rev)
	if rec[1]&0x20 != 0 {
		sb.WriteByte('H')
	} else {
		sb.WriteByte('L')
	}
	fmt.Fprintf(&sb, "%d", rec[12])
	constraint := rec[6:12]
	n := len(constraint)
	for n > 0 && constraint[n-1] == 0 {
		n--
	}
	for _, b := range constraint[:n] {
		fmt.Fprintf(&sb, ".%X", b)
	}
	return sb.String()
}

// Media describes what a player needs to know about a stream before it loads the init segment:
// the HLS master playlist's CODECS and RESOLUTION, the MSE mime type.
type Media struct {
	// Codecs are the RFC 6381 codecs parameters of the tracks, in track order, e.g.
	// ["avc1.64001E", "mp4a.40.2"].
	Codecs []string
	// Width and Height are the picture size of the (first) video track, in pixels.
	Width, Height int
	// HEVC is true when the video is H.265, which many browsers cannot decode.
	HEVC bool
	// Audio is true when an AAC track is present.
	Audio bool
	// Tracks describe each track, in track order.
	Tracks []MediaTrack
}

// MediaTrack is what a player is told of one track before it fetches it (an MPEG-DASH
// Representation's attributes).
type MediaTrack struct {
	Number        uint64 // Matroska TrackNumber
	Video         bool
	Codecs        string // RFC 6381
	Width, Height int    // video
	Rate          int    // audio sampling rate, Hz
	Channels      int    // audio
}

// Describe returns what NewInit would put into the init segment for tracks, without building it.
// Errors are those of NewInit.
func Describe(tracks []mkv.Track) (Media, error) {
	ts, err := layout(tracks)
	if err != nil {
		return Media{}, err
	}
	var m Media
	for _, t := range ts {
		m.Codecs = append(m.Codecs, t.codecs)
		m.Tracks = append(m.Tracks, MediaTrack{Number: t.number, Video: t.video, Codecs: t.codecs,
			Width: t.width, Height: t.height, Rate: t.rate, Channels: t.channels})
		switch {
		case t.video && m.Width == 0:
			m.Width, m.Height, m.HEVC = t.width, t.height, t.entry == "hvc1"
		case !t.video:
			m.Audio = true
		}
	}
	return m, nil
}

// NewInit returns the init segment (ftyp + moov) of a fragmented MP4 holding tracks: one MP4
// track per Matroska track, with track_IDs 1, 2, ... in the order given, H.264 as avc1 (the
// CodecPrivate becomes the avcC box unchanged), H.265 as hvc1 (the hvcC, its parameter-set arrays
// marked complete) and AAC as mp4a (the AudioSpecificConfig in an esds box). Video has a 90 kHz
// timescale, audio its sampling rate. Media segments for these tracks come from
// AppendMediaSegment.
//
// Errors are *TrackError wrapping ErrUnsupportedCodec (any other codec, or no video track),
// ErrMissingCodecPrivate or ErrInvalidCodecPrivate.
func NewInit(tracks []mkv.Track) ([]byte, error) {
	ts, err := layout(tracks)
	if err != nil {
		return nil, err
	}
	return buildInit(ts, 0)
}

// buildInit encodes the init segment. lead > 0 (in nanoseconds) adds an edit list to each track
// that skips the first lead of its media time: the Writer shifts every timestamp by lead so that
// B-frame decode times stay non-negative, and the edit list shifts presentation back to 0.
func buildInit(ts []track, lead int64) ([]byte, error) {
	init := mp4.CreateEmptyInit()
	// iso6 covers tfdt version 1 and signed offsets; mp41 and avc1 let older players in.
	init.Ftyp = mp4.NewFtyp("iso6", 0, []string{"iso6", "iso5", "mp41", "avc1", "dash"})
	init.Children[0] = init.Ftyp
	init.Moov.Mvhd.Timescale = 1000
	for _, t := range ts {
		kind := "audio"
		if t.video {
			kind = "video"
		}
		init.AddEmptyTrack(t.timescale, kind, "und")
		trak := init.Moov.Traks[len(init.Moov.Traks)-1]
		stsd := trak.Mdia.Minf.Stbl.Stsd
		switch t.entry {
		case "avc1", "hvc1":
			trak.Tkhd.Width = mp4.Fixed32(t.width << 16)
			trak.Tkhd.Height = mp4.Fixed32(t.height << 16)
			box := "avcC"
			if t.entry == "hvc1" {
				box = "hvcC"
			}
			cfg := mp4.CreateUnknownBox(box, uint64(8+len(t.config)), t.config)
			stsd.AddChild(mp4.CreateVisualSampleEntryBox(t.entry, uint16(t.width), uint16(t.height), cfg))
		case "mp4a":
			esds := mp4.CreateEsdsBox(t.config)
			stsd.AddChild(mp4.CreateAudioSampleEntryBox("mp4a", uint16(t.channels), 16, uint16(t.rate), esds))
		}
		if lead > 0 {
			edts := &mp4.EdtsBox{}
			edts.AddChild(&mp4.ElstBox{Entries: []mp4.ElstEntry{{
				SegmentDuration:  0, // fragmented: the whole media
				MediaTime:        mulDivRound(lead, int64(t.timescale), 1e9),
				MediaRateInteger: 1,
			}}})
			// edts goes right after tkhd.
			trak.Children = append(trak.Children[:1], append([]mp4.Box{edts}, trak.Children[1:]...)...)
			trak.Edts = edts
		}
	}
	var buf bytes.Buffer
	buf.Grow(int(init.Size()))
	if err := init.Encode(&buf); err != nil {
		return nil, fmt.Errorf("fmp4: encode init segment: %w", err)
	}
	return buf.Bytes(), nil
}
