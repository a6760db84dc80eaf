package mkv

// A small hand-written EBML writer for the few elements kvs emits. ebml-go's writers cannot
// write Tags through their block writer, report success before the sink has written, and run at
// about 150-210 MB/s; these append-style functions run at memory speed and never allocate when b
// has the capacity.

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// unknownSize is the 8-byte "unknown" size vint that KVS producers write for Segment and Cluster.
const unknownSize = 0x01FFFFFFFFFFFFFF

// idLen returns the encoded length of an element ID (IDs include their length-marker bits).
func idLen(id uint32) int {
	switch {
	case id <= 0xFF:
		return 1
	case id <= 0xFFFF:
		return 2
	case id <= 0xFFFFFF:
		return 3
	}
	return 4
}

func appendID(b []byte, id uint32) []byte {
	switch idLen(id) {
	case 1:
		return append(b, byte(id))
	case 2:
		return append(b, byte(id>>8), byte(id))
	case 3:
		return append(b, byte(id>>16), byte(id>>8), byte(id))
	}
	return append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// vintLen returns the shortest vint length that can hold v (the all-ones value of each length is
// reserved for "unknown").
func vintLen(v uint64) int {
	n := 1
	for n < 8 && v >= uint64(1)<<(7*n)-1 {
		n++
	}
	return n
}

// putVint writes v as an n-byte vint into b[:n].
func putVint(b []byte, v uint64, n int) {
	v |= uint64(1) << (7 * n)
	for i := n - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func appendVint(b []byte, v uint64) []byte {
	n := vintLen(v)
	l := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)[:l+n]
	putVint(b[l:], v, n)
	return b
}

// AppendElementHeader appends an element ID and data size. size -1 writes the 8-byte unknown
// size 0x01FFFFFFFFFFFFFF; other sizes use the shortest vint. Sizes above 2^56-2 cannot be
// encoded and are written as unknown.
func AppendElementHeader(b []byte, id uint32, size int64) []byte {
	b = appendID(b, id)
	if size < 0 || size >= 1<<56-1 {
		return append(b, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
	}
	return appendVint(b, uint64(size))
}

// VoidHeaderSize is the size of the header AppendVoidHeader writes.
const VoidHeaderSize = 9

// AppendVoidHeader appends the header of a Void element that takes total bytes, header included
// (total ≥ VoidHeaderSize): its data, total-VoidHeaderSize bytes of any value (zeros), must follow.
// The size is written on 8 bytes, so any total fits. Readers skip Void elements wherever they are:
// they pad an answer to a length promised before it was written.
func AppendVoidHeader(b []byte, total int64) []byte {
	b = appendID(b, IDVoid)
	l := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	putVint(b[l:], uint64(total-VoidHeaderSize), 8)
	return b
}

func uintLen(v uint64) int {
	n := 1
	for n < 8 && v >= uint64(1)<<(8*n) {
		n++
	}
	return n
}

func appendUintData(b []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// AppendUint appends an unsigned integer element in the fewest bytes (at least one).
func AppendUint(b []byte, id uint32, v uint64) []byte {
	n := uintLen(v)
	b = AppendElementHeader(b, id, int64(n))
	return appendUintData(b, v, n)
}

// AppendInt appends a signed integer element in the fewest two's-complement bytes.
func AppendInt(b []byte, id uint32, v int64) []byte {
	n := intLen(v)
	b = AppendElementHeader(b, id, int64(n))
	return appendUintData(b, uint64(v), n)
}

// AppendFloat appends a float element as an 8-byte IEEE 754 double.
func AppendFloat(b []byte, id uint32, v float64) []byte {
	b = AppendElementHeader(b, id, 8)
	return appendUintData(b, math.Float64bits(v), 8)
}

// AppendString appends a string (or UTF-8) element, without a terminating NUL.
func AppendString(b []byte, id uint32, s string) []byte {
	b = AppendElementHeader(b, id, int64(len(s)))
	return append(b, s...)
}

// AppendBinary appends a binary element.
func AppendBinary(b []byte, id uint32, v []byte) []byte {
	b = AppendElementHeader(b, id, int64(len(v)))
	return append(b, v...)
}

// begin starts a master element whose size is not yet known: it writes the ID and reserves 8
// bytes for the size. end fills it in with the shortest vint and moves the data down.
func begin(b []byte, id uint32) ([]byte, int) {
	b = appendID(b, id)
	mark := len(b)
	return append(b, 0, 0, 0, 0, 0, 0, 0, 0), mark
}

func end(b []byte, mark int) []byte {
	size := uint64(len(b) - mark - 8)
	n := vintLen(size)
	putVint(b[mark:], size, n)
	if n < 8 {
		copy(b[mark+n:], b[mark+8:])
		b = b[:len(b)-(8-n)]
	}
	return b
}

// AppendEBMLHeader appends an EBML header for docType ("matroska" or "webm"; "" means
// "matroska").
func AppendEBMLHeader(b []byte, docType string) []byte {
	if docType == "" {
		docType = "matroska"
	}
	version := uint64(4)
	if docType == "webm" {
		version = 2
	}
	b, m := begin(b, IDEBML)
	b = AppendUint(b, IDEBMLVersion, 1)
	b = AppendUint(b, IDEBMLReadVersion, 1)
	b = AppendUint(b, IDEBMLMaxIDLength, 4)
	b = AppendUint(b, IDEBMLMaxSizeLen, 8)
	b = AppendString(b, IDDocType, docType)
	b = AppendUint(b, IDDocTypeVersion, version)
	b = AppendUint(b, IDDocTypeReadVer, 2)
	return end(b, m)
}

// AppendSegmentStart appends the header of an unknown-size Segment, as KVS chunks and live
// streams use; its children follow.
func AppendSegmentStart(b []byte) []byte {
	return AppendElementHeader(b, IDSegment, -1)
}

// AppendInfo appends a segment Info with TimecodeScale (nanoseconds per tick; 0 means
// DefaultTimecodeScale) and MuxingApp/WritingApp set to app ("" means "kvs").
func AppendInfo(b []byte, timecodeScale uint64, app string) []byte {
	if timecodeScale == 0 {
		timecodeScale = DefaultTimecodeScale
	}
	if app == "" {
		app = "kvs"
	}
	b, m := begin(b, IDInfo)
	b = AppendUint(b, IDTimecodeScale, timecodeScale)
	b = AppendString(b, IDMuxingApp, app)
	b = AppendString(b, IDWritingApp, app)
	return end(b, m)
}

// AppendTracks appends a Tracks element with one TrackEntry per track. Zero-valued optional
// fields are left out; a zero UID is written as the track number (Matroska forbids UID 0).
func AppendTracks(b []byte, tracks []Track) []byte {
	b, m := begin(b, IDTracks)
	for i := range tracks {
		t := &tracks[i]
		var e int
		b, e = begin(b, IDTrackEntry)
		b = AppendUint(b, IDTrackNumber, t.Number)
		uid := t.UID
		if uid == 0 {
			uid = t.Number
		}
		b = AppendUint(b, IDTrackUID, uid)
		if t.Type != 0 {
			b = AppendUint(b, IDTrackType, uint64(t.Type))
		}
		b = AppendString(b, IDCodecID, t.CodecID)
		if len(t.CodecPrivate) > 0 {
			b = AppendBinary(b, IDCodecPrivate, t.CodecPrivate)
		}
		if t.Name != "" {
			b = AppendString(b, IDTrackName, t.Name)
		}
		if t.DefaultDuration > 0 {
			b = AppendUint(b, IDDefaultDuration, uint64(t.DefaultDuration))
		}
		if t.CodecDelay > 0 {
			b = AppendUint(b, IDCodecDelay, uint64(t.CodecDelay))
		}
		if t.SeekPreRoll > 0 {
			b = AppendUint(b, IDSeekPreRoll, uint64(t.SeekPreRoll))
		}
		if t.Width != 0 || t.Height != 0 {
			var v int
			b, v = begin(b, IDVideo)
			b = AppendUint(b, IDPixelWidth, uint64(t.Width))
			b = AppendUint(b, IDPixelHeight, uint64(t.Height))
			b = end(b, v)
		}
		if t.SamplingRate != 0 || t.Channels != 0 || t.BitDepth != 0 {
			var a int
			b, a = begin(b, IDAudio)
			if t.SamplingRate != 0 {
				b = AppendFloat(b, IDSamplingFreq, t.SamplingRate)
			}
			if t.Channels != 0 {
				b = AppendUint(b, IDChannels, uint64(t.Channels))
			}
			if t.BitDepth != 0 {
				b = AppendUint(b, IDBitDepth, uint64(t.BitDepth))
			}
			b = end(b, a)
		}
		b = end(b, e)
	}
	return end(b, m)
}

// AppendTags appends one Tags element holding one Tag (no Targets) with the given SimpleTags, the
// way KVS writes its tags. A SimpleTag with a non-nil Binary gets a TagBinary, otherwise a
// TagString; Children are nested SimpleTags.
func AppendTags(b []byte, tags ...SimpleTag) []byte {
	b, m := begin(b, IDTags)
	var t int
	b, t = begin(b, IDTag)
	for i := range tags {
		b = appendSimpleTag(b, &tags[i])
	}
	b = end(b, t)
	return end(b, m)
}

func appendSimpleTag(b []byte, st *SimpleTag) []byte {
	b, m := begin(b, IDSimpleTag)
	b = AppendString(b, IDTagName, st.Name)
	if st.Binary != nil {
		b = AppendBinary(b, IDTagBinary, st.Binary)
	} else {
		b = AppendString(b, IDTagString, st.Value)
	}
	for i := range st.Children {
		b = appendSimpleTag(b, &st.Children[i])
	}
	return end(b, m)
}

// ErrTimecodeRange reports a frame whose timecode is more than an int16 away from its cluster's
// timecode, or a negative cluster timecode.
var ErrTimecodeRange = errors.New("mkv: timecode out of range")

// blockSize returns the size of a frame's Block or SimpleBlock data.
func blockSize(f *Frame) int64 {
	return int64(vintLen(f.Track)) + 3 + int64(len(f.Data))
}

// inGroup reports whether a frame needs a BlockGroup: a SimpleBlock has no room for a
// BlockDuration or a DiscardPadding.
func inGroup(f *Frame) bool { return f.Duration > 0 || f.DiscardPadding != 0 }

// frameElementSize returns the bytes a frame occupies in a cluster.
func frameElementSize(f *Frame) int64 {
	if !inGroup(f) {
		bs := blockSize(f)
		return int64(idLen(IDSimpleBlock)+vintLen(uint64(bs))) + bs
	}
	g := blockGroupSize(f)
	return int64(idLen(IDBlockGroup)+vintLen(uint64(g))) + g
}

// blockGroupSize returns the data size of the BlockGroup written for a frame with a Duration or
// a DiscardPadding.
func blockGroupSize(f *Frame) int64 {
	bs := blockSize(f)
	g := int64(idLen(IDBlock)+vintLen(uint64(bs))) + bs
	if f.Duration > 0 {
		g += int64(idLen(IDBlockDuration)+1) + int64(uintLen(uint64(f.Duration)))
	}
	if !f.Keyframe {
		g += int64(idLen(IDReferenceBlock)+1) + int64(intLen(referenceBlock))
	}
	if f.DiscardPadding != 0 {
		g += int64(idLen(IDDiscardPadding)+1) + int64(intLen(int64(f.DiscardPadding)))
	}
	return g
}

func intLen(v int64) int {
	n := 1
	for n < 8 && (v < -(int64(1)<<(8*n-1)) || v >= int64(1)<<(8*n-1)) {
		n++
	}
	return n
}

// referenceBlock is the ReferenceBlock value written for a non-keyframe in a BlockGroup: the
// frame is said to reference the one just before it. Players only look at its presence.
const referenceBlock = -1

// AppendCluster appends one known-size Cluster with the given timecode (ticks, >= 0) and frames.
// Frames with neither a Duration nor a DiscardPadding are written as SimpleBlocks; the others as
// BlockGroups (Block, then BlockDuration if set, a ReferenceBlock for non-keyframes, and
// DiscardPadding if set) so that those survive. Each frame's timecode must be within int16 of the
// cluster's (before it too: an AAC priming frame may be); otherwise it returns ErrTimecodeRange
// and b unchanged. Track numbers of any size are written as vints.
func AppendCluster(b []byte, timecode int64, frames []Frame) ([]byte, error) {
	if timecode < 0 {
		return b, fmt.Errorf("cluster timecode %d: %w", timecode, ErrTimecodeRange)
	}
	var size int64
	for i := range frames {
		if err := checkClusterFrame(timecode, &frames[i]); err != nil {
			return b, fmt.Errorf("frame %d %w", i, err)
		}
		size += frameElementSize(&frames[i])
	}
	b = slices.Grow(b, ClusterHeaderSize+int(size)) // one allocation, not one per doubling
	b = AppendClusterHeader(b, timecode, size)
	for i := range frames {
		b = appendClusterFrame(b, timecode, &frames[i])
	}
	return b, nil
}

// ClusterHeaderSize is the most bytes AppendClusterHeader appends.
const ClusterHeaderSize = 4 + 8 + 2 + 1 + 8

// AppendClusterHeader appends the start of a known-size Cluster with the given timecode (ticks,
// >= 0) whose frames, written by AppendClusterFrame, take framesSize bytes: its element header
// and its Timecode. The header and then the frames are the bytes AppendCluster writes, so a
// cluster can be built frame by frame as the frames arrive and its header put before them at the
// end.
func AppendClusterHeader(b []byte, timecode, framesSize int64) []byte {
	size := int64(idLen(IDTimecode)+1) + int64(uintLen(uint64(timecode))) + framesSize
	b = AppendElementHeader(b, IDCluster, size)
	return AppendUint(b, IDTimecode, uint64(timecode))
}

// AppendClusterFrame appends f as it goes in a Cluster with the given timecode (see
// AppendCluster and AppendClusterHeader). It returns ErrTimecodeRange, and b unchanged, when f's
// timecode is not within int16 of the cluster's.
func AppendClusterFrame(b []byte, clusterTimecode int64, f *Frame) ([]byte, error) {
	if err := checkClusterFrame(clusterTimecode, f); err != nil {
		return b, fmt.Errorf("frame %w", err)
	}
	return appendClusterFrame(b, clusterTimecode, f), nil
}

// checkClusterFrame checks what AppendCluster needs of a frame; its errors read after "frame".
func checkClusterFrame(timecode int64, f *Frame) error {
	// rel must fit an int16; written so that nothing overflows.
	if f.Timecode < timecode+math.MinInt16 || f.Timecode-math.MaxInt16 > timecode {
		return fmt.Errorf("timecode %d, cluster %d: %w", f.Timecode, timecode, ErrTimecodeRange)
	}
	if f.Track >= 1<<56-1 {
		return fmt.Errorf("track number %d too large", f.Track)
	}
	return nil
}

func appendClusterFrame(b []byte, timecode int64, f *Frame) []byte {
	rel := f.Timecode - timecode
	if !inGroup(f) {
		b = AppendElementHeader(b, IDSimpleBlock, blockSize(f))
		return appendBlock(b, f, rel, f.Keyframe)
	}
	bs := blockSize(f)
	b = AppendElementHeader(b, IDBlockGroup, blockGroupSize(f))
	b = AppendElementHeader(b, IDBlock, bs)
	b = appendBlock(b, f, rel, false)
	if f.Duration > 0 {
		b = AppendUint(b, IDBlockDuration, uint64(f.Duration))
	}
	if !f.Keyframe {
		b = AppendInt(b, IDReferenceBlock, referenceBlock)
	}
	if f.DiscardPadding != 0 {
		b = AppendInt(b, IDDiscardPadding, int64(f.DiscardPadding))
	}
	return b
}

// FrameElementSize is the most bytes AppendClusterFrame appends for f.
func FrameElementSize(f *Frame) int { return int(frameElementSize(f)) }

func appendBlock(b []byte, f *Frame, rel int64, key bool) []byte {
	b = appendVint(b, f.Track)
	flags := byte(0)
	if key {
		flags |= 0x80
	}
	b = append(b, byte(uint16(rel)>>8), byte(rel), flags)
	return append(b, f.Data...)
}

// Fragment is one KVS fragment: one Cluster with the segment context needed to play it and the
// KVS tags around it. As a GetMedia chunk it is one self-contained MKV document.
type Fragment struct {
	DocType       string // "" → "matroska"
	TimecodeScale uint64 // nanoseconds per tick; 0 → DefaultTimecodeScale
	Tracks        []Track
	Tags          []SimpleTag // KVS tags written before the cluster (fragment number, timestamps)
	Timecode      int64       // cluster timecode, ticks
	Frames        []Frame
	TrailingTags  []SimpleTag // written after the cluster (millis behind now, continuation token)

	arena []byte // the frames' memory when a FragmentReader made f (see Release)
}

// AppendFragment appends f as one self-contained MKV document in the GetMedia chunk layout: EBML
// header, unknown-size Segment, Info, Tracks, Tags (if any), a known-size Cluster, and trailing
// Tags (if any). On error b is returned unchanged.
func AppendFragment(b []byte, f *Fragment) ([]byte, error) {
	start := len(b)
	b = AppendEBMLHeader(b, f.DocType)
	b = AppendSegmentStart(b)
	b = AppendInfo(b, f.TimecodeScale, "")
	b = AppendTracks(b, f.Tracks)
	if len(f.Tags) > 0 {
		b = AppendTags(b, f.Tags...)
	}
	b, err := AppendCluster(b, f.Timecode, f.Frames)
	if err != nil {
		return b[:start], err
	}
	if len(f.TrailingTags) > 0 {
		b = AppendTags(b, f.TrailingTags...)
	}
	return b, nil
}
