package mkv

import "time"

// Matroska element IDs used by kvs (with their length-descriptor bits, as written on the wire).
const (
	IDEBML            = 0x1A45DFA3
	IDEBMLVersion     = 0x4286
	IDEBMLReadVersion = 0x42F7
	IDEBMLMaxIDLength = 0x42F2
	IDEBMLMaxSizeLen  = 0x42F3
	IDDocType         = 0x4282
	IDDocTypeVersion  = 0x4287
	IDDocTypeReadVer  = 0x4285

	IDSegment       = 0x18538067
	IDSeekHead      = 0x114D9B74
	IDInfo          = 0x1549A966
	IDTimecodeScale = 0x2AD7B1
	IDDuration      = 0x4489
	IDMuxingApp     = 0x4D80
	IDWritingApp    = 0x5741
	IDSegmentUID    = 0x73A4

	IDTracks           = 0x1654AE6B
	IDTrackEntry       = 0xAE
	IDTrackNumber      = 0xD7
	IDTrackUID         = 0x73C5
	IDTrackType        = 0x83
	IDCodecID          = 0x86
	IDCodecPrivate     = 0x63A2
	IDCodecDelay       = 0x56AA
	IDSeekPreRoll      = 0x56BB
	IDDefaultDuration  = 0x23E383
	IDTrackName        = 0x536E
	IDLanguage         = 0x22B59C
	IDVideo            = 0xE0
	IDPixelWidth       = 0xB0
	IDPixelHeight      = 0xBA
	IDAudio            = 0xE1
	IDSamplingFreq     = 0xB5
	IDChannels         = 0x9F
	IDBitDepth         = 0x6264
	IDContentEncodings = 0x6D80

	IDCluster        = 0x1F43B675
	IDTimecode       = 0xE7
	IDSimpleBlock    = 0xA3
	IDBlockGroup     = 0xA0
	IDBlock          = 0xA1
	IDBlockDuration  = 0x9B
	IDReferenceBlock = 0xFB
	IDDiscardPadding = 0x75A2

	IDCues        = 0x1C53BB6B
	IDChapters    = 0x1043A770
	IDAttachments = 0x1941A469
	IDVoid        = 0xEC
	IDCRC32       = 0xBF

	IDTags        = 0x1254C367
	IDTag         = 0x7373
	IDTargets     = 0x63C0
	IDSimpleTag   = 0x67C8
	IDTagName     = 0x45A3
	IDTagLanguage = 0x447A
	IDTagDefault  = 0x4484
	IDTagString   = 0x4487
	IDTagBinary   = 0x4485
)

// DefaultTimecodeScale is Matroska's default TimecodeScale: 1 tick = 1 ms.
const DefaultTimecodeScale = 1_000_000

// Track types (Matroska TrackType).
const (
	TrackTypeVideo = 1
	TrackTypeAudio = 2
)

// Tag names KVS uses, defined once (see ../shared/kvs-api.md §5.2, §6.1, §8).
const (
	TagFragmentNumber        = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
	TagServerTimestamp       = "AWS_KINESISVIDEO_SERVER_TIMESTAMP"
	TagProducerTimestamp     = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"
	TagServerSideTimestamp   = "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP"
	TagProducerSideTimestamp = "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP"
	TagMillisBehindNow       = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
	TagContinuationToken     = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
	TagErrorCode             = "AWS_KINESISVIDEO_ERROR_CODE"
	TagErrorID               = "AWS_KINESISVIDEO_ERROR_ID"
	TagExceptionErrorCode    = "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE"
	TagExceptionMessage      = "AWS_KINESISVIDEO_EXCEPTION_MESSAGE"
	TagEndOfFragment         = "AWS_KINESISVIDEO_END_OF_FRAGMENT"
	TagImageGeneration       = "AWS_KINESISVIDEO_IMAGE_GENERATION"
	TagImagePrefix           = "AWS_KINESISVIDEO_IMAGE_PREFIX"
	TagNotification          = "AWS_KINESISVIDEO_NOTIFICATION"
)

// Track is one Matroska TrackEntry.
type Track struct {
	Number       uint64
	UID          uint64
	Type         uint8  // TrackTypeVideo, TrackTypeAudio, ...
	CodecID      string // e.g. "V_MPEG4/ISO/AVC", "V_MPEGH/ISO/HEVC", "A_AAC"
	CodecPrivate []byte // avcC / hvcC / AudioSpecificConfig
	Name         string
	// DefaultDuration is the TrackEntry DefaultDuration (0 when absent).
	DefaultDuration time.Duration
	CodecDelay      time.Duration
	SeekPreRoll     time.Duration // decoding to drop after a seek (Opus: 80 ms)
	Width, Height   uint32        // video only
	SamplingRate    float64       // audio only, Hz
	Channels        uint8         // audio only
	BitDepth        uint8         // audio only, 0 when absent
}

// SimpleTag is one Matroska SimpleTag (name and string value), possibly nested.
type SimpleTag struct {
	Name     string
	Value    string // TagString
	Binary   []byte // TagBinary, when present instead of TagString
	Children []SimpleTag
}

// Tag is one Matroska Tag element. KVS tags carry no Targets.
type Tag struct {
	SimpleTags []SimpleTag
}

// Frame is one coded frame from a SimpleBlock or a BlockGroup/Block.
type Frame struct {
	Track    uint64
	Timecode int64 // absolute, in TimecodeScale ticks (cluster timecode + block relative timecode)
	Keyframe bool
	// Duration is the BlockGroup's BlockDuration in ticks; 0 when absent.
	Duration int64
	// DiscardPadding is the BlockGroup's DiscardPadding: decoded audio a player drops, in
	// nanoseconds (not ticks). Negative drops that much from the start of the frame's decoded
	// samples (AAC priming, which MP4 expresses with an edit list), positive from its end; 0 when
	// absent. Of a laced block, the first frame gets a negative value, the last a positive one.
	DiscardPadding time.Duration
	// Data is the frame payload. From Reader.Next it is valid only until the next call to Next.
	Data []byte
}
