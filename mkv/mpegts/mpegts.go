package mpegts

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mcmpegts "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/mkv/fmp4"
)

var (
	// ErrNotADTS: an AAC track whose AudioSpecificConfig ADTS headers cannot express: a sampling
	// rate outside the ADTS table, or 960-sample frames. It comes wrapped with
	// fmp4.ErrUnsupportedCodec in an *fmp4.TrackError.
	ErrNotADTS = errors.New("mpegts: AAC configuration ADTS cannot carry")
	// ErrInvalidFrame: a video frame is not NAL units prefixed with the length size its
	// CodecPrivate declares.
	ErrInvalidFrame = errors.New("mpegts: video frame is not length-prefixed NAL units")
)

// clockMask keeps the 33 bits of an MPEG-TS timestamp.
const clockMask = 1<<33 - 1

// maxAudioPES is how many bytes of ADTS frames one audio PES packet carries at most: ffmpeg's
// default PES payload size (16 TS packets' worth).
const maxAudioPES = 2930

// track is one Matroska track mapped to an elementary stream.
type track struct {
	number uint64
	c      codec.Codec // 0 for AAC
	ps     codec.ParameterSets
	params [][]byte // the parameter sets to put before a keyframe, in decoding order
	asc    mpeg4audio.AudioSpecificConfig
	es     *mcmpegts.Track
}

// layout maps tracks to elementary streams; errors are fmp4.Describe's and ErrNotADTS.
func layout(tracks []mkv.Track) ([]track, error) {
	if _, err := fmp4.Describe(tracks); err != nil {
		return nil, err
	}
	out := make([]track, len(tracks))
	for i := range tracks {
		mt := &tracks[i]
		t := &out[i]
		t.number = mt.Number
		fail := func(err error) ([]track, error) {
			return nil, &fmp4.TrackError{Track: mt.Number, CodecID: mt.CodecID, Err: err}
		}
		switch mt.CodecID {
		case codec.CodecIDH264, codec.CodecIDH265:
			t.c, _ = codec.FromCodecID(mt.CodecID)
			ps, err := codec.ParseConfig(t.c, mt.CodecPrivate)
			if err != nil { // Describe parsed it
				return fail(fmt.Errorf("%w: %v", fmp4.ErrInvalidCodecPrivate, err))
			}
			t.ps = ps
			t.params = slices.Concat(ps.VPS, ps.SPS, ps.PPS)
			if t.c == codec.H264 {
				t.es = &mcmpegts.Track{Codec: &mcmpegts.CodecH264{}}
			} else {
				t.es = &mcmpegts.Track{Codec: &mcmpegts.CodecH265{}}
			}
		default: // A_AAC
			if err := t.asc.Unmarshal(mt.CodecPrivate); err != nil {
				return fail(fmt.Errorf("%w: %v", fmp4.ErrInvalidCodecPrivate, err))
			}
			probe := mpeg4audio.ADTSPackets{{Type: t.asc.Type, SampleRate: t.asc.SampleRate, ChannelCount: t.asc.ChannelCount}}
			if _, err := probe.Marshal(); err != nil {
				return fail(fmt.Errorf("%w: %w: %v", fmp4.ErrUnsupportedCodec, ErrNotADTS, err))
			}
			if t.asc.FrameLengthFlag {
				return fail(fmt.Errorf("%w: %w: 960-sample frames", fmp4.ErrUnsupportedCodec, ErrNotADTS))
			}
			t.es = &mcmpegts.Track{Codec: &mcmpegts.CodecMPEG4Audio{Config: t.asc}}
		}
	}
	return out, nil
}

// Check reports whether tracks can be remuxed into MPEG-TS segments: nil, or the error
// AppendSegment would return for any fragment with those tracks (fmp4.Describe's, ErrNotADTS).
func Check(tracks []mkv.Track) error {
	_, err := layout(tracks)
	return err
}

// appender is an io.Writer appending to a slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// AppendSegment appends the MPEG-TS segment of every frame of f to dst and returns the extended
// slice; on error dst is returned unchanged. start, prev and prevStart are those of
// fmp4.AppendSegmentAfter, whose times the frames keep (fmp4.Times), on the 90 kHz clock modulo
// 2^33 (see the package documentation). The segment starts with a PAT and a PMT and needs nothing
// else to play. AppendSegment does not retain f, prev or dst; besides the segment it allocates
// about one frame at a time.
//
// Errors are fmp4.Times's, Check's, ErrInvalidFrame, and fmp4.ErrEmptyFragment when no frame
// holds data (frames without any, or with only empty NAL units, are left out).
func AppendSegment(dst []byte, f *mkv.Fragment, start time.Duration, prev *mkv.Fragment, prevStart time.Duration) ([]byte, error) {
	out, err := appendPackets(dst, f, start, prev, prevStart)
	if err != nil {
		return dst, err
	}
	return continuous(out, len(dst)), nil
}

// appendPackets is AppendSegment but for the continuity counters: as the writer numbers them.
func appendPackets(dst []byte, f *mkv.Fragment, start time.Duration, prev *mkv.Fragment, prevStart time.Duration) ([]byte, error) {
	ts, err := layout(f.Tracks)
	if err != nil {
		return dst, err
	}
	times, err := fmp4.Times(f, start, prev, prevStart)
	if err != nil {
		return dst, err
	}
	byNumber := make(map[uint64]*track, len(ts))
	streams := make([]*mcmpegts.Track, len(ts))
	for i := range ts {
		byNumber[ts[i].number] = &ts[i]
		streams[i] = ts[i].es
	}

	// Written in decode order, with the first video frame (the fragment's keyframe) first: the
	// writer makes the first stream written carry the PCR, and the video stream should.
	dts := make([]int64, len(times))
	for i, ft := range times {
		dts[i] = to90k(ft.DTS, ft.Timescale)
	}
	order := make([]int, len(times))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(dts[a], dts[b]) })
	if v := slices.IndexFunc(order, func(i int) bool { return times[i].Video }); v > 0 {
		first := order[v]
		copy(order[1:v+1], order[:v])
		order[0] = first
	}

	out := &appender{b: slices.Grow(dst, estimate(f, ts))}
	w := &mcmpegts.Writer{W: out, Tracks: streams}
	if err := w.Initialize(); err != nil {
		return dst, fmt.Errorf("mpegts: %w", err)
	}
	audio := audioGroups{w: w}
	var nalus [][]byte
	for _, i := range order {
		ft := times[i]
		fr := &f.Frames[ft.Frame]
		t := byNumber[ft.Track]
		if t.c == 0 {
			if err := audio.add(t, ft, fr.Data); err != nil {
				return dst, err
			}
			continue
		}
		nalus = nalus[:0]
		err := codec.WalkAVCC(fr.Data, t.ps.LengthSize, func(n []byte) error {
			nalus = append(nalus, n)
			return nil
		})
		if errors.Is(err, codec.ErrNoNALUs) {
			continue // nothing to decode
		}
		if err != nil {
			return dst, fmt.Errorf("%w: track %d, frame %d: %v", ErrInvalidFrame, t.number, ft.Frame, err)
		}
		if fr.Keyframe {
			nalus = withParams(t, nalus)
		}
		pts, dts := to90k(ft.PTS, ft.Timescale)&clockMask, dts[i]&clockMask
		if t.c == codec.H264 {
			err = w.WriteH264(t.es, pts, dts, nalus)
		} else {
			err = w.WriteH265(t.es, pts, dts, nalus)
		}
		if err != nil {
			return dst, fmt.Errorf("mpegts: track %d, frame %d: %w", t.number, ft.Frame, err)
		}
	}
	if err := audio.flushAll(); err != nil {
		return dst, err
	}
	if len(out.b) == len(dst) {
		return dst, fmt.Errorf("%w: no frame holds data", fmp4.ErrEmptyFragment)
	}
	return out.b, nil
}

// withParams returns the NAL units of a keyframe of t with the track's parameter sets before its
// first, after an access unit delimiter, unless it carries its own SPS already.
func withParams(t *track, nalus [][]byte) [][]byte {
	sps, aud := codec.H264NALUSPS, codec.H264NALUAUD
	if t.c == codec.H265 {
		sps, aud = codec.H265NALUSPS, codec.H265NALUAUD
	}
	if slices.ContainsFunc(nalus, func(n []byte) bool { return codec.NALUType(t.c, n) == sps }) {
		return nalus
	}
	at := 0
	if codec.NALUType(t.c, nalus[0]) == aud {
		at = 1
	}
	return slices.Concat(nalus[:at], t.params, nalus[at:])
}

// audioGroups gathers consecutive AAC frames of each track into PES packets of up to maxAudioPES
// bytes. Frames are consecutive when the next starts one frame (1024 samples) after the previous,
// within a millisecond (Matroska timecodes are usually whole milliseconds): the PES carries the
// first one's timestamp, and a decoder times the others a frame apart.
type audioGroups struct {
	w       *mcmpegts.Writer
	pending []audioGroup
}

type audioGroup struct {
	t      *track
	pts    int64 // 90 kHz, of the first frame
	last   int64 // native ticks, of the last frame
	size   int
	frames [][]byte
}

func (g *audioGroups) add(t *track, ft fmp4.FrameTime, data []byte) error {
	if len(data) == 0 {
		return nil // nothing to decode
	}
	k := slices.IndexFunc(g.pending, func(p audioGroup) bool { return p.t == t })
	if k >= 0 {
		p := &g.pending[k]
		gap := ft.PTS - p.last - 1024
		tol := int64(ft.Timescale)/1000 + 1
		if gap >= -tol && gap <= tol && p.size+len(data)+7 <= maxAudioPES {
			p.frames = append(p.frames, data)
			p.size += len(data) + 7
			p.last = ft.PTS
			return nil
		}
		if err := g.flush(k); err != nil {
			return err
		}
	}
	g.pending = append(g.pending, audioGroup{t: t, pts: to90k(ft.PTS, ft.Timescale) & clockMask, last: ft.PTS,
		size: len(data) + 7, frames: [][]byte{data}})
	return nil
}

// flush writes pending group k and forgets it.
func (g *audioGroups) flush(k int) error {
	p := g.pending[k]
	g.pending = slices.Delete(g.pending, k, k+1)
	if err := g.w.WriteMPEG4Audio(p.t.es, p.pts, p.frames); err != nil {
		return fmt.Errorf("mpegts: track %d: %w", p.t.number, err)
	}
	return nil
}

func (g *audioGroups) flushAll() error {
	for len(g.pending) > 0 {
		if err := g.flush(0); err != nil {
			return err
		}
	}
	return nil
}

// to90k converts ticks of timescale (at most 2^63 ns worth, fmp4.Times's) to the 90 kHz clock,
// rounding to nearest.
func to90k(ticks int64, timescale uint32) int64 {
	if timescale == 90000 || ticks <= 0 {
		return ticks
	}
	hi, lo := bits.Mul64(uint64(ticks), 90000)
	lo, carry := bits.Add64(lo, uint64(timescale/2), 0)
	// hi+carry < timescale, as Div64 needs: ticks are at most 2^63 ns at 96 kHz (under 2^50),
	// so hi is at most 4, and timescale, a sampling rate of the ADTS table, at least 7350.
	q, _ := bits.Div64(hi+carry, lo, uint64(timescale))
	return int64(q & (1<<63 - 1))
}

// estimate is about the size of f's segment: the frames, their parameter sets and the TS packet
// headers (4 of 188 bytes), a PES header and half a packet of stuffing per frame, the tables, and
// the packets that end each track's continuity counters at 15 (continuity.go).
func estimate(f *mkv.Fragment, ts []track) int {
	n := 4*188 + 15*188*len(ts)
	for i := range f.Frames {
		n += len(f.Frames[i].Data) + 120
		if f.Frames[i].Keyframe {
			for j := range ts {
				if ts[j].number == f.Frames[i].Track {
					for _, p := range ts[j].params {
						n += 4 + len(p)
					}
				}
			}
		}
	}
	return n + n/46
}
