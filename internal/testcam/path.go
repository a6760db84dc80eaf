package testcam

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// path is one served stream and its playback.
type path struct {
	cfg    PathConfig
	clips  []*clip
	stream *gortsplib.ServerStream
	video  *medium
	audio  *medium
	done   chan struct{}

	mu          sync.Mutex
	sessions    map[*gortsplib.ServerSession]bool
	plays       int
	started     bool
	settleUntil time.Time
	frozenUntil time.Time
	stallUntil  time.Time // RTP stops, RTCP sender reports go on
	sinceKey    bool      // a video keyframe was written since the last PLAY
	keys        int       // video keyframes sent
	sent        []SentFrame
	drops       []int // len(sent) at each Drop
	playStarts  []int // len(sent) at each PLAY
}

// medium is one track's RTP side.
type medium struct {
	media  *description.Media
	encode func([][]byte) ([]*rtp.Packet, error)
	clock  int64
	ssrc   uint32
	base   uint32 // RTP timestamp of presentation time 0
	lastSR time.Time
	codec  codec.Codec
}

func newPath(srv *gortsplib.Server, cfg PathConfig, clips []*clip) (*path, error) {
	p := &path{cfg: cfg, clips: clips, done: make(chan struct{}), sessions: map[*gortsplib.ServerSession]bool{}}
	desc := &description.Session{}
	inBand := cfg.InBandParams || len(clips) > 1
	for _, t := range clips[0].tracks {
		switch t.CodecID {
		case codec.CodecIDH264, codec.CodecIDH265:
			if p.video != nil {
				continue
			}
			c, _ := codec.FromCodecID(t.CodecID)
			ps, err := codec.ParseConfig(c, t.CodecPrivate)
			if err != nil {
				return nil, err
			}
			var f format.Format
			var enc func([][]byte) ([]*rtp.Packet, error)
			ssrc := uint32(0x1000 + len(desc.Medias))
			if c == codec.H264 {
				h := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
				if !inBand {
					h.SPS, h.PPS = first(ps.SPS), first(ps.PPS)
				}
				e, err := h.CreateEncoder()
				if err != nil {
					return nil, err
				}
				e.SSRC = &ssrc
				f, enc = h, e.Encode
			} else {
				h := &format.H265{PayloadTyp: 96}
				if !inBand {
					h.VPS, h.SPS, h.PPS = first(ps.VPS), first(ps.SPS), first(ps.PPS)
				}
				e, err := h.CreateEncoder()
				if err != nil {
					return nil, err
				}
				e.SSRC = &ssrc
				f, enc = h, e.Encode
			}
			m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
			desc.Medias = append(desc.Medias, m)
			p.video = &medium{media: m, encode: enc, clock: 90000, ssrc: ssrc, base: 0x12345678, codec: c}
		case codec.CodecIDAAC:
			var asc mpeg4audio.AudioSpecificConfig
			if err := asc.Unmarshal(t.CodecPrivate); err != nil {
				return nil, err
			}
			ssrc := uint32(0x2000)
			f, enc, err := aacFormat(&asc, ssrc, cfg.LATM)
			if err != nil {
				return nil, err
			}
			m := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
			desc.Medias = append(desc.Medias, m)
			p.audio = &medium{media: m, encode: enc, clock: int64(asc.SampleRate), ssrc: ssrc, base: 0x0badcafe}
		}
	}
	if p.video == nil {
		return nil, fmt.Errorf("testcam: %s has no H.264 or H.265 video", cfg.Clips[0])
	}
	if cfg.G711 {
		desc.Medias = append(desc.Medias, &description.Media{Type: description.MediaTypeAudio,
			Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}})
	}
	p.stream = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := p.stream.Initialize(); err != nil {
		return nil, err
	}
	return p, nil
}

// aacFormat is the RTP format of AAC audio with config asc: MPEG4-GENERIC, or MP4A-LATM (one
// AudioMuxElement an access unit, the StreamMuxConfig in the SDP).
func aacFormat(asc *mpeg4audio.AudioSpecificConfig, ssrc uint32, latm bool) (format.Format, func([][]byte) ([]*rtp.Packet, error), error) {
	if !latm {
		a := &format.MPEG4Audio{PayloadTyp: 97, Config: asc, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		e, err := a.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		e.SSRC = &ssrc
		return a, e.Encode, nil
	}
	smc := &mpeg4audio.StreamMuxConfig{Programs: []*mpeg4audio.StreamMuxConfigProgram{{
		Layers: []*mpeg4audio.StreamMuxConfigLayer{{AudioSpecificConfig: asc, LatmBufferFullness: 255}}}}}
	a := &format.MPEG4AudioLATM{PayloadTyp: 97, ProfileLevelID: 30, StreamMuxConfig: smc}
	e, err := a.CreateEncoder()
	if err != nil {
		return nil, nil, err
	}
	e.SSRC = &ssrc
	return a, func(units [][]byte) ([]*rtp.Packet, error) {
		var pkts []*rtp.Packet
		for _, au := range units {
			buf, err := mpeg4audio.AudioMuxElement{StreamMuxConfig: smc, Payloads: [][][][]byte{{{au}}}}.Marshal()
			if err != nil {
				return nil, err
			}
			p, err := e.Encode(buf)
			if err != nil {
				return nil, err
			}
			pkts = append(pkts, p...)
		}
		return pkts, nil
	}, nil
}

func first(b [][]byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b[0]
}

// play sends the clips in real time, paced by decode time, until the loops are done or ctx ends.
func (p *path) play(ctx context.Context) {
	defer close(p.done)
	// The first PLAY's session settles first: the first frame (a keyframe) is sent.
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return
	}
	start := time.Now()
	clock := p.cfg.Clock
	if clock.IsZero() {
		clock = start
	}
	var offset time.Duration // presentation time of the current clip's first frame
	for loop := 0; p.cfg.Loops == 0 || loop < p.cfg.Loops; loop++ {
		for _, cl := range p.clips {
			t0 := cl.frames[0].PTS
			for _, fr := range cl.frames {
				due := start.Add(offset + max(fr.DTS, t0) - t0)
				if wait := time.Until(due); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return
					}
				}
				track := 2
				for _, t := range cl.tracks {
					if t.Number == fr.Track && t.Type == mkv.TrackTypeVideo {
						track = 1
					}
				}
				p.write(track, offset+fr.PTS-t0, clock, fr.Data, fr.Keyframe, cl)
			}
			offset += cl.span
		}
	}
}

// write sends one frame to the readers, when there are readers and it is a frame they can use.
func (p *path) write(track int, pts time.Duration, clock time.Time, data []byte, key bool, cl *clip) {
	now := time.Now()
	p.mu.Lock()
	listening := len(p.sessions) > 0 && !now.Before(p.settleUntil)
	active := listening && !now.Before(p.frozenUntil)
	stalled := active && now.Before(p.stallUntil)
	switch {
	case !listening:
		p.sinceKey = false
		// A new reader gets a sender report before its first packet.
		p.video.lastSR = time.Time{}
		if p.audio != nil {
			p.audio.lastSR = time.Time{}
		}
	case active && !stalled && track == 1 && key:
		p.sinceKey = true
	}
	if stalled {
		// Sender reports only, with the clock running on; no frame is sent. Every 200 ms, as
		// gortsplib's client keeps the time of the last packet in whole seconds.
		m := p.video
		send := p.cfg.SenderReports && (m.lastSR.IsZero() || now.Sub(m.lastSR) >= 200*time.Millisecond)
		if send {
			m.lastSR = now
		}
		p.mu.Unlock()
		if send {
			ts := m.base + uint32(int64(pts)*m.clock/int64(time.Second)) //nolint:gosec // RTP timestamps wrap
			_ = p.stream.WritePacketRTCP(m.media, &rtcp.SenderReport{SSRC: m.ssrc, NTPTime: ntp64(clock.Add(pts)), RTPTime: ts})
		}
		return
	}
	if !active || !p.sinceKey {
		p.mu.Unlock()
		return
	}
	ntp := clock.Add(pts)
	lose := false
	if track == 1 && key {
		p.keys++
		lose = p.keys == p.cfg.LoseKeyframePacket
	}
	p.sent = append(p.sent, SentFrame{Track: track, Time: ntp, Key: key && track == 1, Lost: lose})
	m := p.video
	if track == 2 {
		m = p.audio
	}
	sendSR := p.cfg.SenderReports && (p.cfg.SenderReportPlays == 0 || p.plays <= p.cfg.SenderReportPlays) &&
		(m.lastSR.IsZero() || now.Sub(m.lastSR) >= time.Second)
	if sendSR {
		m.lastSR = now
	}
	p.mu.Unlock()

	if m == nil {
		return
	}
	ts := m.base + uint32(int64(pts)*m.clock/int64(time.Second)) //nolint:gosec // RTP timestamps wrap
	if sendSR {
		_ = p.stream.WritePacketRTCP(m.media, &rtcp.SenderReport{SSRC: m.ssrc, NTPTime: ntp64(ntp), RTPTime: ts})
	}
	var units [][]byte
	if track == 1 {
		if key && (p.cfg.InBandParams || len(p.clips) > 1) {
			ps, _ := codec.ParseConfig(m.codec, cl.videoPrivate())
			units = append(append(append(units, ps.VPS...), ps.SPS...), ps.PPS...)
		}
		_ = codec.WalkAVCC(data, 4, func(n []byte) error {
			units = append(units, n)
			return nil
		})
	} else {
		units = [][]byte{data}
	}
	pkts, err := m.encode(units)
	if err != nil {
		return
	}
	for i, pkt := range pkts {
		if lose && i == len(pkts)/2 {
			continue
		}
		pkt.Timestamp = ts
		_ = p.stream.WritePacketRTPWithNTP(m.media, pkt, ntp)
	}
}

// videoPrivate is the clip's video CodecPrivate.
func (cl *clip) videoPrivate() []byte {
	for _, t := range cl.tracks {
		if t.Type == mkv.TrackTypeVideo {
			return t.CodecPrivate
		}
	}
	return nil
}

// ntp64 encodes t as an RFC 3550 NTP timestamp: seconds since 1900, 32.32 fixed point.
func ntp64(t time.Time) uint64 {
	const unixToNTP = 2208988800
	sec := uint64(t.Unix() + unixToNTP)                        //nolint:gosec // after 1900
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second) //nolint:gosec // < 1e9
	return sec<<32 | frac
}
