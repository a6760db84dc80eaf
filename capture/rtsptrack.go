package capture

import (
	"bytes"
	"errors"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/openkvs/kvs/mkv/codec"
)

// rtspTrack is the state of one played track.
type rtspTrack struct {
	number uint64
	media  *description.Media
	format format.Format
	clock  int64
	codec  codec.Codec // video only
	decode func(*rtp.Packet) ([][]byte, error)
	vps    []byte // parameter sets, from the SDP, then from the stream
	sps    []byte
	pps    []byte
	dirty  bool   // a parameter set changed since the current track was built
	asc    []byte // AAC AudioSpecificConfig
	rate   int    // AAC sample rate
	chans  int

	// Packet loss, video only: the gortsplib goroutine that hands this track's packets owns them.
	seqKnown bool
	nextSeq  uint16 // the sequence number the next packet should have
	damaged  bool   // a packet was lost or undecodable since the last access unit

	started   bool
	firstTS   uint32    // RTP timestamp of the first packet
	firstRecv time.Time // when it was received
	prevTS    uint32
	ext       int64 // extended RTP timestamp of the last packet (0 at the first)

	haveSR bool
	srNTP  time.Time
	srRTP  uint32

	anchored  bool
	anchorAt  time.Time // the time of extended timestamp anchorExt
	anchorExt int64
}

// extend returns the extended timestamp of ts (the first packet's is 0).
func (t *rtspTrack) extend(ts uint32, now time.Time) int64 {
	if !t.started {
		t.started, t.firstTS, t.prevTS, t.firstRecv = true, ts, ts, now
		return 0
	}
	t.ext += int64(int32(ts - t.prevTS)) //nolint:gosec // RTP timestamps wrap: the difference is signed
	t.prevTS = ts
	return t.ext
}

// gap notes the packet's sequence number and reports whether packets before it were lost.
func (t *rtspTrack) gap(seq uint16) bool {
	lost := t.seqKnown && seq != t.nextSeq
	t.seqKnown, t.nextSeq = true, seq+1
	return lost
}

// at returns the time of extended timestamp ext on the anchored clock.
func (t *rtspTrack) at(ext int64) time.Time {
	d := ext - t.anchorExt
	return t.anchorAt.Add(time.Duration(d/t.clock)*time.Second + time.Duration(d%t.clock*int64(time.Second)/t.clock))
}

// unixToNTP is the Unix epoch in NTP seconds (since 1900).
const unixToNTP = 2208988800

// ntpTime converts an RTCP NTP timestamp (RFC 3550: seconds since 1900, 32.32 fixed point).
func ntpTime(v uint64) time.Time {
	sec := int64(v>>32) - unixToNTP             //nolint:gosec // 32 bits
	frac := int64((v & 0xFFFFFFFF) * 1e9 >> 32) //nolint:gosec // < 1e9
	return time.Unix(sec, frac)
}

func newVideoTrack(m *description.Media, f format.Format, c codec.Codec, sps, pps, vps []byte) (*rtspTrack, error) {
	t := &rtspTrack{number: 1, media: m, format: f, clock: int64(f.ClockRate()), codec: c,
		sps: cloneBytes(sps), pps: cloneBytes(pps), vps: cloneBytes(vps)}
	switch f := f.(type) {
	case *format.H264:
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		t.decode = d.Decode
	case *format.H265:
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		t.decode = d.Decode
	}
	return t, nil
}

func newAudioTrack(m *description.Media, f *format.MPEG4Audio) (*rtspTrack, error) {
	asc, err := f.Config.Marshal()
	if err != nil {
		return nil, err
	}
	d, err := f.CreateDecoder()
	if err != nil {
		return nil, err
	}
	return &rtspTrack{number: 2, media: m, format: f, clock: int64(f.ClockRate()), decode: d.Decode,
		asc: asc, rate: f.Config.SampleRate, chans: f.Config.ChannelCount}, nil
}

// newLATMTrack plays AAC sent as MP4A-LATM (RFC 6416): each RTP frame is an AudioMuxElement,
// whose payloads are the access units. The StreamMuxConfig must be in the SDP.
func newLATMTrack(m *description.Media, f *format.MPEG4AudioLATM) (*rtspTrack, error) {
	smc := f.StreamMuxConfig
	if smc == nil || len(smc.Programs) == 0 || len(smc.Programs[0].Layers) == 0 || smc.Programs[0].Layers[0].AudioSpecificConfig == nil {
		return nil, errors.New("no StreamMuxConfig in the SDP")
	}
	conf := smc.Programs[0].Layers[0].AudioSpecificConfig
	asc, err := conf.Marshal()
	if err != nil {
		return nil, err
	}
	d, err := f.CreateDecoder()
	if err != nil {
		return nil, err
	}
	decode := func(pkt *rtp.Packet) ([][]byte, error) {
		buf, err := d.Decode(pkt)
		if err != nil {
			return nil, err
		}
		e := mpeg4audio.AudioMuxElement{MuxConfigPresent: f.CPresent, StreamMuxConfig: smc}
		if err := e.Unmarshal(buf); err != nil {
			return nil, err
		}
		var aus [][]byte
		for _, sub := range e.Payloads {
			if len(sub) > 0 && len(sub[0]) > 0 {
				aus = append(aus, sub[0][0])
			}
		}
		return aus, nil
	}
	return &rtspTrack{number: 2, media: m, format: f, clock: int64(conf.SampleRate), decode: decode,
		asc: asc, rate: conf.SampleRate, chans: conf.ChannelCount}, nil
}

// keepParam stores parameter set n in *p when it differs from the one there (cameras repeat them
// before every keyframe) and says whether it did.
func keepParam(p *[]byte, n []byte) bool {
	if bytes.Equal(*p, n) {
		return false
	}
	*p = cloneBytes(n)
	return true
}
