package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// maxMP4Samples caps the samples of one MP4 file the source indexes (about 40 bytes each).
const maxMP4Samples = 10_000_000

// MP4Source reads frames from a progressive (moov + mdat) or fragmented (moof + mdat) MP4 file.
// H.264, H.265 and AAC tracks are carried; other tracks are skipped (reported to Options.Notice).
// Timestamps come from the sample tables: DTS from stts (or trun durations and tfdt), PTS adds the
// composition offset (ctts / trun), and the first edit list entry shifts both so that the first
// presented frame is at its edit's start (0 for files made by ffmpeg). Frames of all tracks are
// merged in DTS order.
//
// Audio before an edit's start is handled as ffmpeg's MP4 demuxer handles it: the frames that
// start up to a second before it are kept, because the decoder needs them (an AAC frame decodes
// by overlapping with the one before: the priming frame ffmpeg's and Apple's encoders put first,
// which an edit list then skips, exists for that), and the part before the edit start gets a
// negative DiscardPadding so that players drop its decoded samples; earlier frames are dropped.
// A kept priming frame is before 0 (-1024 samples for ffmpeg's AAC), so all tracks are then
// shifted together by the offset that puts the earliest PTS at 0: A/V sync stays that of the
// source, and the first video frame is presented at that offset (21.3 ms for 48 kHz AAC) instead
// of at 0.
type MP4Source struct {
	rs io.ReadSeeker
	input
	tracks []mkv.Track
	state  []*mp4Track
	offset time.Duration // added to every timestamp so that no PTS is negative (see MP4Source)
	buf    []byte        // sample buffer lent to a Fragmenter (readLent)
}

// MaxMP4SampleSize caps one MP4 sample, in bytes: sizes come from the file's sample table, and a
// damaged or hostile one must not make the reader allocate gigabytes.
const MaxMP4SampleSize = 50 << 20

type mp4Track struct {
	number     uint64
	codec      codec.Codec // 0 for audio
	lengthSize int
	timescale  uint64
	shift      int64 // subtracted from decode times (edit list), in timescale units
	samples    []mp4Sample
	next       int
}

type mp4Sample struct {
	offset uint64
	size   uint32
	dts    int64 // timescale units
	cto    int32 // composition time offset
	dur    uint32
	sync   bool
	skip   uint32 // timescale units at the start that the edit list leaves out of the presentation
}

func (t *mp4Track) dts(i int) time.Duration { return t.scale(t.samples[i].dts - t.shift) }

func (t *mp4Track) pts(i int) time.Duration {
	return t.scale(t.samples[i].dts + int64(t.samples[i].cto) - t.shift)
}

func (t *mp4Track) scale(v int64) time.Duration {
	return time.Duration(math.Round(float64(v) * float64(time.Second) / float64(t.timescale)))
}

// mp4DecodeError is an error of the box decoder, which open follows with how to send the file
// anyway (remuxed to Matroska by ffmpeg, which reads more of QuickTime than the decoder does).
type mp4DecodeError struct{ err error }

func (e mp4DecodeError) Error() string { return strings.TrimSpace(e.err.Error()) }
func (e mp4DecodeError) Unwrap() error { return e.err }

// decodeMP4 reads the file's boxes with mp4ff. Its decoder panics on some malformed files (in
// v0.50.0, a moov box whose first trak has no mdia box: File.AddChild follows
// Moov.Trak.Mdia.Minf.Stbl without a check; found by FuzzFragmenterReuse), and this package never
// panics on input: the panic becomes an error saying the file is malformed.
func decodeMP4(rs io.ReadSeeker) (f *mp4.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("malformed file, the box decoder failed: %v", p)
		}
	}()
	return mp4.DecodeFile(rs, mp4.WithDecodeMode(mp4.DecModeLazyMdat))
}

// NewMP4Source indexes the MP4 file rs (it reads the boxes, not the media) and returns a Source
// over it. closer, if not nil, is closed by Close.
func NewMP4Source(rs io.ReadSeeker, closer io.Closer, opts Options) (*MP4Source, error) {
	f, err := decodeMP4(rs)
	if err != nil {
		return nil, fmt.Errorf("mp4: %w", mp4DecodeError{err})
	}
	if f.Moov == nil {
		return nil, errors.New("mp4: no moov box (is this a media segment without its init segment?)")
	}
	s := &MP4Source{rs: rs, input: input{closer}}
	size, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("mp4: %w", err)
	}
	budget := maxMP4Samples // for the whole file, not per track
	for _, trak := range f.Moov.Traks {
		track, st, skip := mp4TrackInfo(trak, uint64(len(s.tracks)+1))
		if skip != "" {
			opts.notice("mp4: skipping track %d: %s", trakID(trak), skip)
			continue
		}
		if f.IsFragmented() {
			err = st.fragmentedSamples(f, trak, budget, size)
		} else {
			err = st.progressiveSamples(trak, budget, size)
		}
		budget -= len(st.samples)
		if err != nil {
			return nil, fmt.Errorf("mp4: track %d: %w", trakID(trak), err)
		}
		st.shift = editShift(trak, f.Moov.Mvhd)
		if track.Type == mkv.TrackTypeAudio {
			st.trimToEdit()
		}
		s.tracks = append(s.tracks, track)
		s.state = append(s.state, st)
	}
	if len(s.tracks) == 0 {
		return nil, fmt.Errorf("mp4: %w (kvs carries H.264, H.265 and AAC from MP4)", ErrNoTracks)
	}
	// An edit list that skips AAC priming samples puts the priming frame before 0; shift
	// everything so that the earliest frame is at 0 and tracks stay in sync.
	for _, t := range s.state {
		for i := range t.samples {
			if p := t.pts(i); p < -s.offset {
				s.offset = -p
			}
		}
	}
	return s, nil
}

func trakID(trak *mp4.TrakBox) uint32 {
	if trak.Tkhd == nil {
		return 0
	}
	return trak.Tkhd.TrackID
}

// mp4TrackInfo describes trak as an mkv.Track, or says why it is skipped.
func mp4TrackInfo(trak *mp4.TrakBox, number uint64) (mkv.Track, *mp4Track, string) {
	if trak.Mdia == nil || trak.Mdia.Mdhd == nil || trak.Mdia.Minf == nil || trak.Mdia.Minf.Stbl == nil ||
		trak.Mdia.Minf.Stbl.Stsd == nil {
		return mkv.Track{}, nil, "incomplete track boxes"
	}
	if trak.Mdia.Mdhd.Timescale == 0 {
		return mkv.Track{}, nil, "timescale 0"
	}
	stsd := trak.Mdia.Minf.Stbl.Stsd
	t := mkv.Track{Number: number, UID: uint64(trakID(trak))}
	if t.UID == 0 {
		t.UID = number
	}
	st := &mp4Track{number: number, timescale: uint64(trak.Mdia.Mdhd.Timescale)}
	record := func(enc interface {
		Size() uint64
		EncodeSW(bits.SliceWriter) error
	}) ([]byte, error) {
		sw := bits.NewFixedSliceWriter(int(enc.Size()))
		err := enc.EncodeSW(sw)
		return sw.Bytes(), err
	}
	var err error
	switch {
	case stsd.AvcX != nil && stsd.AvcX.AvcC != nil:
		st.codec = codec.H264
		t.CodecPrivate, err = record(&stsd.AvcX.AvcC.DecConfRec)
		t.Width, t.Height = uint32(stsd.AvcX.Width), uint32(stsd.AvcX.Height)
	case stsd.HvcX != nil && stsd.HvcX.HvcC != nil:
		st.codec = codec.H265
		t.CodecPrivate, err = record(&stsd.HvcX.HvcC.DecConfRec)
		t.Width, t.Height = uint32(stsd.HvcX.Width), uint32(stsd.HvcX.Height)
	case stsd.Mp4a != nil:
		a := stsd.Mp4a
		if a.Esds == nil || a.Esds.DecConfigDescriptor == nil {
			return t, nil, "mp4a without an ES descriptor"
		}
		// The object type first: MP3 (0x6b, 0x69) has no decoder specific info at all.
		if ot := a.Esds.DecConfigDescriptor.ObjectType; ot != 0x40 {
			name := "not MPEG-4 audio (AAC)"
			if ot == 0x6b || ot == 0x69 {
				name = "MP3"
			}
			return t, nil, fmt.Sprintf("mp4a object type %#x is %s; kvs carries AAC audio from MP4: to keep the audio, re-encode it, e.g. ffmpeg -i IN -c:v copy -c:a aac -f matroska - | kvs put-media --source - ...", ot, name)
		}
		if a.Esds.DecConfigDescriptor.DecSpecificInfo == nil {
			return t, nil, "mp4a without an AudioSpecificConfig"
		}
		t.Type = mkv.TrackTypeAudio
		t.CodecID = codec.CodecIDAAC
		t.CodecPrivate = cloneBytes(a.Esds.DecConfigDescriptor.DecSpecificInfo.DecConfig)
		asc, err := codec.ParseAudioSpecificConfig(t.CodecPrivate)
		if err != nil {
			return t, nil, err.Error()
		}
		t.SamplingRate, t.Channels = float64(asc.SampleRate), uint8(asc.Channels)
		return t, st, ""
	default:
		return t, nil, "unsupported sample entry (kvs carries avc1/avc3, hvc1/hev1 and mp4a from MP4)"
	}
	if err != nil {
		return t, nil, fmt.Sprintf("decoder configuration record: %v", err)
	}
	ps, err := codec.ParseConfig(st.codec, t.CodecPrivate)
	if err != nil {
		return t, nil, err.Error()
	}
	st.lengthSize = ps.LengthSize
	t.Type = mkv.TrackTypeVideo
	t.CodecID = st.codec.CodecID()
	if info, err := codec.ParseSPS(st.codec, ps.SPS[0]); err == nil {
		t.Width, t.Height = uint32(info.Width), uint32(info.Height)
	}
	return t, st, ""
}

// editShift returns the media time at which the track's presentation starts, from its edit list:
// the media_time of the first non-empty edit, minus any leading empty edit (which delays the track).
func editShift(trak *mp4.TrakBox, mvhd *mp4.MvhdBox) int64 {
	if trak.Edts == nil || len(trak.Edts.Elst) == 0 {
		return 0
	}
	var shift int64
	for _, e := range trak.Edts.Elst[0].Entries {
		if e.MediaTime == -1 {
			if mvhd != nil && mvhd.Timescale > 0 && trak.Mdia.Mdhd.Timescale > 0 {
				shift -= int64(e.SegmentDuration * uint64(trak.Mdia.Mdhd.Timescale) / uint64(mvhd.Timescale))
			}
			continue
		}
		return shift + e.MediaTime
	}
	return shift
}

// audioPreRoll is how long before an edit's start audio frames are kept for the decoder: a
// second, as ffmpeg's MP4 demuxer keeps (mov_fix_index), which covers the one frame AAC-LC needs
// and the longer history of HE-AAC's SBR.
const audioPreRoll = time.Second

// trimToEdit prepares an audio track for its edit list's start (shift): samples that end more
// than audioPreRoll before it are dropped; the others that start before it are kept, with skip
// set to the part before the edit start (the whole sample for a priming frame), which players
// must decode and then drop. Video samples are never dropped: later pictures may reference them.
func (t *mp4Track) trimToEdit() {
	preRoll := int64(t.timescale) * int64(audioPreRoll/time.Second)
	start := func(i int) int64 { return t.samples[i].dts + int64(t.samples[i].cto) }
	n := 0
	// Written so that a hostile shift cannot overflow: shift-preRoll could, the sums here cannot.
	for n < len(t.samples) && start(n)+int64(t.samples[n].dur)+preRoll <= t.shift {
		n++
	}
	t.samples = t.samples[n:]
	for i := range t.samples {
		switch smp := &t.samples[i]; {
		case start(i) >= t.shift:
			return
		case start(i)+int64(smp.dur) <= t.shift:
			smp.skip = smp.dur
		default:
			smp.skip = uint32(t.shift - start(i)) // less than dur
		}
	}
}

// progressiveSamples indexes the samples of a progressive file's track from its sample tables.
func (t *mp4Track) progressiveSamples(trak *mp4.TrakBox, budget int, fileSize int64) error {
	stbl := trak.Mdia.Minf.Stbl
	if stbl.Stts == nil || stbl.Stsc == nil || stbl.Stsz == nil || (stbl.Stco == nil && stbl.Co64 == nil) {
		return errors.New("sample table lacks stts, stsc, stsz or stco/co64")
	}
	n := int(stbl.Stsz.SampleNumber)
	if n > budget {
		return fmt.Errorf("%d samples, more than the %d supported in one file", n, maxMP4Samples)
	}
	if u := uint64(stbl.Stsz.SampleUniformSize); u > 0 && uint64(n)*u > uint64(fileSize) {
		return fmt.Errorf("stsz: %d samples of %d bytes, more than the file's %d bytes", n, u, fileSize)
	}
	if stbl.Stsz.SampleUniformSize == 0 && len(stbl.Stsz.SampleSize) < n {
		return fmt.Errorf("stsz lists %d sizes for %d samples", len(stbl.Stsz.SampleSize), n)
	}
	var chunkOffsets []uint64
	if stbl.Stco != nil {
		for _, o := range stbl.Stco.ChunkOffset {
			chunkOffsets = append(chunkOffsets, uint64(o))
		}
	} else {
		chunkOffsets = stbl.Co64.ChunkOffset
	}
	t.samples = make([]mp4Sample, n)

	// Decode times from stts.
	i := 0
	var dts int64
	for e := range stbl.Stts.SampleCount {
		for k := uint32(0); k < stbl.Stts.SampleCount[e] && i < n; k++ {
			t.samples[i].dts = dts
			t.samples[i].dur = stbl.Stts.SampleTimeDelta[e]
			dts += int64(stbl.Stts.SampleTimeDelta[e])
			i++
		}
	}
	if i < n {
		return fmt.Errorf("stts covers %d of %d samples", i, n)
	}
	// Composition offsets from ctts (EndSampleNr[k] is the 1-based last sample of run k).
	if c := stbl.Ctts; c != nil {
		for k := 1; k < len(c.EndSampleNr) && k-1 < len(c.SampleOffset); k++ {
			for j := c.EndSampleNr[k-1]; j < c.EndSampleNr[k] && int(j) < n; j++ {
				t.samples[j].cto = c.SampleOffset[k-1]
			}
		}
	}
	// Sync samples: all when stss is absent.
	if stbl.Stss == nil {
		for j := range t.samples {
			t.samples[j].sync = true
		}
	} else {
		for _, nr := range stbl.Stss.SampleNumber {
			if nr >= 1 && int(nr) <= n {
				t.samples[nr-1].sync = true
			}
		}
	}
	// Offsets from stsc + chunk offsets + sizes.
	i = 0
	entries := stbl.Stsc.Entries
	for e, entry := range entries {
		lastChunk := uint32(len(chunkOffsets))
		if e+1 < len(entries) {
			lastChunk = entries[e+1].FirstChunk - 1
		}
		if entry.FirstChunk == 0 || lastChunk > uint32(len(chunkOffsets)) {
			return fmt.Errorf("stsc entry %d refers to chunks %d-%d of %d", e, entry.FirstChunk, lastChunk, len(chunkOffsets))
		}
		for chunk := entry.FirstChunk; chunk <= lastChunk && i < n; chunk++ {
			off := chunkOffsets[chunk-1]
			for k := uint32(0); k < entry.SamplesPerChunk && i < n; k++ {
				size := stbl.Stsz.SampleUniformSize
				if size == 0 {
					size = stbl.Stsz.SampleSize[i]
				}
				t.samples[i].offset, t.samples[i].size = off, size
				off += uint64(size)
				i++
			}
		}
	}
	if i < n {
		return fmt.Errorf("stsc/stco place %d of %d samples", i, n)
	}
	return nil
}

// fragmentedSamples indexes the samples of a fragmented file's track: those of its sample tables
// first (ffmpeg's -movflags frag_keyframe without empty_moov puts the first fragment's samples
// there, in an mdat before the first moof), then those of its moof boxes.
func (t *mp4Track) fragmentedSamples(f *mp4.File, trak *mp4.TrakBox, budget int, fileSize int64) error {
	var next int64 // decode time continuing from the samples before when tfdt is absent
	if stsz := trak.Mdia.Minf.Stbl.Stsz; stsz != nil && stsz.SampleNumber > 0 {
		if err := t.progressiveSamples(trak, budget, fileSize); err != nil {
			return err
		}
		last := t.samples[len(t.samples)-1]
		next = last.dts + int64(last.dur)
	}
	id := trakID(trak)
	trexes := map[uint32]*mp4.TrexBox{}
	if f.Moov.Mvex != nil {
		for _, x := range f.Moov.Mvex.Trexs {
			trexes[x.TrackID] = x
		}
	}
	for _, seg := range f.Segments {
		for _, frag := range seg.Fragments {
			if frag.Moof == nil {
				continue
			}
			// Where a traf's data starts when its tfhd gives no base offset and does not say
			// default-base-is-moof: at the moof for the first traf, else right after the data of
			// the traf before it, whichever track that is (ISO/IEC 14496-12 8.8.7.1).
			implicit := frag.Moof.StartPos
			for _, traf := range frag.Moof.Trafs {
				if traf.Tfhd == nil {
					continue
				}
				ours := traf.Tfhd.TrackID == id
				dts := next
				if traf.Tfdt != nil {
					dts = int64(traf.Tfdt.BaseMediaDecodeTime())
				}
				base := implicit
				switch {
				case traf.Tfhd.HasBaseDataOffset():
					base = traf.Tfhd.BaseDataOffset
				case traf.Tfhd.DefaultBaseIfMoof():
					base = frag.Moof.StartPos
				}
				for _, trun := range traf.Truns {
					trun.AddSampleDefaultValues(traf.Tfhd, trexes[traf.Tfhd.TrackID])
					off := base
					if trun.HasDataOffset() {
						off = uint64(int64(base) + int64(trun.DataOffset))
					}
					for _, smp := range trun.Samples {
						if ours {
							if len(t.samples) >= budget {
								return fmt.Errorf("more than the %d samples supported", maxMP4Samples)
							}
							t.samples = append(t.samples, mp4Sample{
								offset: off, size: smp.Size, dts: dts, cto: smp.CompositionTimeOffset, dur: smp.Dur,
								sync: mp4.IsSyncSampleFlags(smp.Flags),
							})
						}
						off += uint64(smp.Size)
						dts += int64(smp.Dur)
					}
					base = off // a following trun without data offset continues here
				}
				implicit = base
				if ours {
					next = dts
				}
			}
		}
	}
	return nil
}

// Tracks returns the carried tracks, numbered from 1 in file order (UID is the MP4 track ID).
func (s *MP4Source) Tracks() []mkv.Track { return s.tracks }

// ReadFrame returns the sample with the smallest decode time among the tracks (ties go to the
// earlier track).
func (s *MP4Source) ReadFrame(ctx context.Context) (Frame, error) { return s.read(ctx, false) }

// readLent implements lender: the frame's Data may be the source's buffer, valid until the next
// read.
func (s *MP4Source) readLent(ctx context.Context) (Frame, error) { return s.read(ctx, true) }

func (s *MP4Source) read(ctx context.Context, lend bool) (Frame, error) {
	if err := ctx.Err(); err != nil {
		return Frame{}, err
	}
	var best *mp4Track
	var bestDTS time.Duration
	for _, t := range s.state {
		if t.next >= len(t.samples) {
			continue
		}
		if d := t.dts(t.next); best == nil || d < bestDTS {
			best, bestDTS = t, d
		}
	}
	if best == nil {
		return Frame{}, io.EOF
	}
	smp := best.samples[best.next]
	best.next++
	if _, err := s.rs.Seek(int64(smp.offset), io.SeekStart); err != nil {
		return Frame{}, fmt.Errorf("mp4: track %d sample %d: %w", best.number, best.next, err)
	}
	if smp.size > MaxMP4SampleSize {
		return Frame{}, fmt.Errorf("mp4: track %d sample %d is %d bytes, more than the %d a frame may have (damaged file?)",
			best.number, best.next, smp.size, MaxMP4SampleSize)
	}
	var data []byte
	if lend {
		if cap(s.buf) < int(smp.size) {
			s.buf = make([]byte, smp.size)
		}
		data = s.buf[:smp.size]
	} else {
		data = make([]byte, smp.size)
	}
	if _, err := io.ReadFull(s.rs, data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("mp4: track %d sample %d at offset %d: %w (file truncated?)", best.number, best.next, smp.offset, err)
	}
	fr := Frame{
		Track:          best.number,
		DTS:            bestDTS + s.offset,
		PTS:            best.pts(best.next-1) + s.offset,
		Keyframe:       smp.sync,
		DiscardPadding: -best.scale(int64(smp.skip)),
		Data:           data,
	}
	if best.codec != 0 {
		if best.lengthSize != 4 {
			var err error
			if fr.Data, err = codec.ConvertLengthSize(nil, data, best.lengthSize); err != nil {
				return Frame{}, fmt.Errorf("mp4: track %d sample %d: %w", best.number, best.next, err)
			}
		}
		fr.Keyframe = codec.IsKeyframeAVCC(best.codec, fr.Data)
	}
	return fr, nil
}
