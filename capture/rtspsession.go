package capture

// One RTSP session of a camera: DESCRIBE, SETUP and PLAY, then RTP packets to frames, stamped.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpfragmented"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// maxHeldBytes bounds the frames a session holds while it waits for the first sender report.
const maxHeldBytes = 32 << 20

// rtspSession is one connection to the camera. gortsplib calls its packet handlers from its own
// goroutines; everything they touch is guarded by mu.
type rtspSession struct {
	s     *rtspSource
	c     *gortsplib.Client
	video *rtspTrack
	audio *rtspTrack // nil without AAC

	mu          sync.Mutex
	ready       bool        // the first video keyframe came: tracks are known
	tracks      []mkv.Track // of the frames pushed last
	decided     bool        // the timing is chosen: frames go to the queue
	held        []rtspItem  // frames waiting for the timing, with RTP time in at
	heldRTP     []int64     // their extended RTP timestamps
	heldBytes   int
	firstPacket time.Time
	srWait      *time.Timer   // decides at SenderReportWait after the first packet, packets or not
	over        bool          // the session ended: nothing more is queued
	ntp         bool          // the timing is the camera's NTP clock
	offset      time.Duration // camera clock minus receive clock, measured on the video's first packet
	dropped     int           // video frames before the first keyframe
	skipping    int           // frames dropped since a damaged keyframe, -1 when not dropping
	lossLast    time.Time     // last packet-loss notice
	lossCount   uint64
	noWallClock bool          // a sender report without a wall-clock time was told
	lastVideo   time.Time     // the last video RTP packet (or PLAY)
	noVideo     time.Duration // the session was closed after this long without video, 0 if not
}

// dial connects, picks the tracks and starts playing. Errors are classified (401, 404, refused,
// unsupported codecs) for the *RTSPError the caller wraps them in.
func (s *rtspSource) dial(ctx context.Context) (*rtspSession, error) {
	var transport *gortsplib.Transport
	switch s.opts.Transport {
	case RTSPTransportTCP:
		transport = ptr(gortsplib.TransportTCP)
	case RTSPTransportUDP:
		transport = ptr(gortsplib.TransportUDP)
	}
	sess := &rtspSession{s: s, skipping: -1}
	c := &gortsplib.Client{
		Scheme:      s.url.Scheme,
		Host:        s.url.Host,
		ReadTimeout: s.opts.ReadTimeout,
		Transport:   transport,
		OnTransportSwitch: func(err error) {
			s.notice("camera %s%s: %v", s.camera, s.path, err)
		},
		OnPacketsLost: sess.lost,
		OnDecodeError: func(error) { sess.lost(0) },
	}
	if s.opts.TLSConfig != nil {
		c.TLSConfig = s.opts.TLSConfig.Clone()
	}
	// gortsplib bounds each request by ReadTimeout, but not the TLS handshake of rtsps://,
	// which it does inside its first write and reads for without a deadline: a camera that
	// never answers it (a plain RTSP port, say) would hang the dial for good, and Close too.
	// The connection is closed when no answer came within ReadTimeout of it, or ctx ends.
	var conn struct {
		sync.Mutex
		c        net.Conn
		answered bool // the first RTSP response came: the handshake is over
		silent   bool // closed for want of one
		closed   bool
	}
	closeConn := func(silent bool) {
		conn.Lock()
		defer conn.Unlock()
		if conn.answered && silent {
			return
		}
		conn.silent = conn.silent || silent
		conn.closed = true
		if conn.c != nil {
			conn.c.Close()
		}
	}
	c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn.Lock()
		defer conn.Unlock()
		if conn.closed {
			nc.Close()
			return nil, net.ErrClosed
		}
		conn.c = nc
		if s.url.Scheme == "rtsps" {
			time.AfterFunc(s.opts.ReadTimeout, func() { closeConn(true) })
		}
		return nc, nil
	}
	c.OnResponse = func(*base.Response) {
		conn.Lock()
		defer conn.Unlock()
		conn.answered = true
	}
	sess.c = c
	if err := c.Start2(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		closeConn(false)
		c.Close()
	})
	ok := false
	defer func() {
		stop()
		if !ok {
			c.Close()
		}
	}()
	desc, _, err := c.Describe(s.url)
	if err != nil {
		conn.Lock()
		silent := conn.silent
		conn.Unlock()
		if silent && ctx.Err() == nil {
			return nil, fmt.Errorf("no answer to the TLS handshake within %v: is this an RTSPS port? (rtsps:// is RTSP over TLS, port 322 by default; a plain RTSP camera takes rtsp://)", s.opts.ReadTimeout)
		}
		return nil, classifyRTSP(ctx, err)
	}
	if err := sess.pick(desc); err != nil {
		return nil, err
	}
	for _, t := range []*rtspTrack{sess.video, sess.audio} {
		if t == nil {
			continue
		}
		if _, err := c.Setup(desc.BaseURL, t.media, 0, 0); err != nil {
			return nil, classifyRTSP(ctx, err)
		}
		c.OnPacketRTP(t.media, t.format, func(pkt *rtp.Packet) { sess.packet(t, pkt) })
		c.OnPacketRTCP(t.media, func(p rtcp.Packet) { sess.rtcp(t, p) })
	}
	sess.lastVideo = time.Now()
	if _, err := c.Play(nil); err != nil {
		return nil, classifyRTSP(ctx, err)
	}
	ok = true
	return sess, nil
}

func ptr[T any](v T) *T { return &v }

// wait blocks until the session ends (an error, the camera silent for ReadTimeout, or the capture
// stopping) and returns why.
func (sess *rtspSession) wait() error {
	stop := context.AfterFunc(sess.s.stop, sess.c.Close)
	defer stop()
	ended := make(chan struct{})
	watched := make(chan struct{})
	go sess.watchVideo(ended, watched)
	err := sess.c.Wait()
	close(ended)
	<-watched
	sess.c.Close()
	sess.mu.Lock()
	if sess.noVideo > 0 && sess.s.stop.Err() == nil {
		err = fmt.Errorf("the camera sent no video for %v, though it kept the connection busy", sess.noVideo.Round(time.Second))
		if !sess.ready {
			err = fmt.Errorf("%w (%v)", ErrRTSPNoKeyframe, err)
		}
	}
	sess.over = true
	if sess.srWait != nil {
		sess.srWait.Stop()
	}
	// Frames still held for a sender report (the camera went silent or away within
	// SenderReportWait) are queued, on the receive clock, before the source marks the cut.
	if !sess.decided && sess.ready && len(sess.held) > 0 {
		sess.decide(time.Now())
	}
	sess.mu.Unlock()
	return classifyRTSP(sess.s.stop, err)
}

// watchVideo closes the session when no video packet came for ReadTimeout, until ended is
// closed; it closes watched when it returns. gortsplib's own read timeout is reset by every
// packet, RTCP and audio included: a camera whose encoder hung while its sender reports go on
// would keep the session open, and the capture waiting, for good.
func (sess *rtspSession) watchVideo(ended <-chan struct{}, watched chan<- struct{}) {
	defer close(watched)
	timeout := sess.s.opts.ReadTimeout
	tick := time.NewTicker(min(max(timeout/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ended:
			return
		case now := <-tick.C:
			sess.mu.Lock()
			silent := now.Sub(sess.lastVideo)
			if silent >= timeout {
				sess.noVideo = silent
			}
			sess.mu.Unlock()
			if silent >= timeout {
				sess.c.Close()
				return
			}
		}
	}
}

// gotKeyframe reports whether the session's first video keyframe came.
func (sess *rtspSession) gotKeyframe() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.ready
}

// classifyRTSP turns what gortsplib and the network say into the errors a user can act on.
func classifyRTSP(ctx context.Context, err error) error {
	var bad liberrors.ErrClientBadStatusCode
	var dns *net.DNSError
	var ne net.Error
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &bad) && bad.Code == base.StatusUnauthorized:
		return ErrRTSPUnauthorized
	case errors.As(err, &bad) && bad.Code == base.StatusNotFound:
		return ErrRTSPNotFound
	case errors.As(err, &bad):
		return fmt.Errorf("the camera answered %d %s", bad.Code, bad.Message)
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrRTSPRefused
	case errors.As(err, &dns):
		return fmt.Errorf("unknown host %s: check the camera's address", dns.Name)
	case errors.As(err, &unknownCA), errors.As(err, &host):
		return fmt.Errorf("rtsps: the camera's TLS certificate does not verify (%w): trust its certificate (put-media --rtsp-ca-file)", err)
	case errors.As(err, &liberrors.ErrClientTCPTimeout{}), errors.As(err, &liberrors.ErrClientUDPTimeout{}):
		return errors.New("the camera sent nothing for the read timeout")
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer in time (%w): check the address and that no firewall is in the way", err)
	}
	return err
}

// pick chooses the first H.264/H.265 video and the first AAC audio of the camera's description;
// other audio codecs are skipped (and told), other video codecs alone are an error.
func (sess *rtspSession) pick(desc *description.Session) error {
	var others []string
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			switch f := f.(type) {
			case *format.H264:
				if sess.video == nil {
					sess.video, _ = newVideoTrack(m, f, codec.H264, f.SPS, f.PPS, nil)
					continue
				}
			case *format.H265:
				if sess.video == nil {
					sess.video, _ = newVideoTrack(m, f, codec.H265, f.SPS, f.PPS, f.VPS)
					continue
				}
			case *format.MPEG4Audio:
				if sess.audio == nil && f.Config != nil {
					if t, err := newAudioTrack(m, f); err == nil {
						sess.audio = t
						continue
					}
				}
			case *format.MPEG4AudioLATM:
				if sess.audio == nil {
					if t, err := newLATMTrack(m, f); err == nil {
						sess.audio = t
						continue
					}
				}
			}
			if sess.video == nil || m != sess.video.media {
				others = append(others, fmt.Sprintf("%s %s", m.Type, f.Codec()))
			}
		}
	}
	if sess.video == nil {
		if len(others) == 0 {
			return fmt.Errorf("%w; it offers no track at all", ErrRTSPUnsupported)
		}
		return fmt.Errorf("%w; it offers %s", ErrRTSPUnsupported, strings.Join(others, ", "))
	}
	var skipped []string
	for _, o := range others {
		if strings.HasPrefix(o, string(description.MediaTypeAudio)) {
			skipped = append(skipped, strings.TrimPrefix(o, "audio "))
		}
	}
	if len(skipped) > 0 {
		sess.s.notice("camera %s%s: audio %s skipped: kvs takes AAC audio only", sess.s.camera, sess.s.path, strings.Join(skipped, ", "))
	}
	return nil
}

// lost is told of lost packets (n) or undecodable ones (0); it notices at most every 10 s.
func (sess *rtspSession) lost(n uint64) {
	sess.mu.Lock()
	sess.lossCount += max(n, 1)
	if time.Since(sess.lossLast) < 10*time.Second {
		sess.mu.Unlock()
		return
	}
	count := sess.lossCount
	sess.lossLast, sess.lossCount = time.Now(), 0
	sess.mu.Unlock()
	sess.s.notice("camera %s%s: %d RTP packets lost or undecodable (pictures may show artifacts until the next keyframe; --rtsp-transport tcp does not lose packets)", sess.s.camera, sess.s.path, count)
}

// rtcp keeps the camera's sender reports: the NTP time of an RTP timestamp.
func (sess *rtspSession) rtcp(t *rtspTrack, p rtcp.Packet) {
	sr, ok := p.(*rtcp.SenderReport)
	if !ok {
		return
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.over || t.anchored || sess.decided && t == sess.video {
		return // the anchor stays: frames never jump
	}
	if sr.NTPTime>>32 < unixToNTP {
		// No wall clock: RFC 3550 6.4.1 lets a sender without one send 0, or its time since
		// boot. Taken as the camera's clock, frames would be stamped 1900.
		if !sess.noWallClock {
			sess.noWallClock = true
			sess.s.notice("camera %s%s: its RTCP sender reports carry no wall-clock time (NTP time %v): timestamps from the time frames are received",
				sess.s.camera, sess.s.path, ntpTime(sr.NTPTime).Format(time.DateTime))
		}
		return
	}
	t.haveSR, t.srNTP, t.srRTP = true, ntpTime(sr.NTPTime), sr.RTPTime
	if t == sess.video && sess.ready {
		sess.decide(time.Now())
	}
}

// senderReportWaited ends the wait for the first sender report: the frames held go out on the
// receive clock (when the first keyframe has come; until then the next frame decides).
func (sess *rtspSession) senderReportWaited() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if !sess.over && !sess.decided && sess.ready {
		sess.decide(time.Now())
	}
}

// packet depacketizes one RTP packet into frames.
func (sess *rtspSession) packet(t *rtspTrack, pkt *rtp.Packet) {
	if t == sess.video && t.gap(pkt.SequenceNumber) {
		// A missing packet belongs to the access unit this packet ends or starts (the
		// decoder splits them by marker or by timestamp): it is damaged.
		t.damaged = true
	}
	units, err := t.decode(pkt)
	if err != nil {
		switch {
		case errors.Is(err, rtph264.ErrMorePacketsNeeded), errors.Is(err, rtph265.ErrMorePacketsNeeded),
			errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded), errors.Is(err, rtpfragmented.ErrMorePacketsNeeded):
		default:
			t.damaged = true
			sess.lost(0)
		}
		return
	}
	damaged := t.damaged
	t.damaged = false
	now := time.Now()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.over {
		return
	}
	if sess.firstPacket.IsZero() {
		sess.firstPacket = now
		// The wait for a sender report ends on time even when no packet comes then: a camera
		// that sends a few seconds and pauses (or one that sends less than SenderReportWait
		// before it stops) would otherwise have its frames held until it sends again, or lost
		// with the session (and at the start, put-media failing with a read timeout).
		sess.srWait = time.AfterFunc(sess.s.opts.SenderReportWait, sess.senderReportWaited)
	}
	ext := t.extend(pkt.Timestamp, now)
	if t == sess.video {
		sess.lastVideo = now
		sess.videoFrame(ext, units, now, damaged)
		return
	}
	if !sess.ready || sess.skipping >= 0 {
		return // audio before the first video keyframe, or with video dropped
	}
	for i, au := range units {
		step := int64(i) * mpeg4audio.SamplesPerAccessUnit
		sess.emit(rtspItem{track: 2, key: true, data: cloneBytes(au)}, ext+step, now)
	}
}

// videoFrame handles one access unit: parameter sets, keyframes, and the track set they give. A
// damaged keyframe (packets of it lost) is no keyframe: the frames that follow refer to it, so it
// and they are dropped up to the next whole keyframe, and the fragment before ends there.
func (sess *rtspSession) videoFrame(ext int64, nalus [][]byte, now time.Time, damaged bool) {
	t := sess.video
	key := false
	for _, n := range nalus {
		typ := codec.NALUType(t.codec, n)
		switch {
		case t.codec == codec.H264 && typ == codec.H264NALUSPS, t.codec == codec.H265 && typ == codec.H265NALUSPS:
			t.dirty = keepParam(&t.sps, n) || t.dirty
		case t.codec == codec.H264 && typ == codec.H264NALUPPS, t.codec == codec.H265 && typ == codec.H265NALUPPS:
			t.dirty = keepParam(&t.pps, n) || t.dirty
		case t.codec == codec.H265 && typ == codec.H265NALUVPS:
			t.dirty = keepParam(&t.vps, n) || t.dirty
		case codec.IsRandomAccessNALU(t.codec, n), codec.IsRecoveryPoint(t.codec, n):
			key = true
		}
	}
	switch {
	case key && damaged && sess.ready:
		if sess.skipping < 0 {
			sess.s.notice("camera %s%s: a keyframe lost RTP packets: dropping it and the frames up to the next whole keyframe (--rtsp-transport tcp does not lose packets)",
				sess.s.camera, sess.s.path)
		}
		sess.skipping = max(sess.skipping, 0) + 1
		return
	case key && damaged:
		key = false // before the first keyframe: dropped below
	case sess.skipping >= 0 && !key:
		sess.skipping++
		return
	case sess.skipping >= 0:
		sess.s.info("camera %s%s: dropped %d frames after a damaged keyframe", sess.s.camera, sess.s.path, sess.skipping)
		sess.skipping = -1
	}
	if key && (!sess.ready || t.dirty) {
		tracks, err := sess.buildTracks()
		if err != nil {
			sess.s.notice("camera %s%s: keyframe skipped: %v", sess.s.camera, sess.s.path, err)
			key = false
		} else {
			t.dirty = false
			if sess.ready {
				sess.emit(rtspItem{cut: true, tracks: tracks}, ext, now)
			} else {
				sess.tracks, sess.ready = tracks, true
				if sess.dropped > 0 {
					sess.s.notice("camera %s%s: dropped %d frames before the first keyframe", sess.s.camera, sess.s.path, sess.dropped)
				}
			}
		}
	}
	if !sess.ready {
		sess.dropped++
		return
	}
	sess.emit(rtspItem{track: 1, key: key, data: codec.AppendLengthPrefixed(nil, nalus...)}, ext, now)
}

// buildTracks makes the track set from the current parameter sets.
func (sess *rtspSession) buildTracks() ([]mkv.Track, error) {
	t := sess.video
	if t.sps == nil || t.pps == nil || t.codec == codec.H265 && t.vps == nil {
		return nil, errors.New("no parameter sets (SPS/PPS) in the SDP or before the keyframe")
	}
	video, info, err := videoTrack(t.codec, t.vps, t.sps, t.pps)
	if err != nil {
		return nil, err
	}
	if fps, ok := info.FrameRate(); ok && fps >= 1 && fps <= 240 {
		video.DefaultDuration = time.Duration(float64(time.Second) / fps)
	}
	tracks := []mkv.Track{video}
	if a := sess.audio; a != nil {
		tracks = append(tracks, mkv.Track{Number: 2, UID: 2, Type: mkv.TrackTypeAudio, CodecID: codec.CodecIDAAC,
			CodecPrivate: a.asc, SamplingRate: float64(a.rate), Channels: uint8(a.chans), //nolint:gosec // AAC has at most 8 channels
			DefaultDuration: time.Duration(mpeg4audio.SamplesPerAccessUnit * int64(time.Second) / int64(a.rate))})
	}
	return tracks, nil
}

// emit stamps a frame (or a cut) and queues it, or holds it until the timing is chosen: the
// camera's first sender report for the video track, or SenderReportWait without one.
func (sess *rtspSession) emit(it rtspItem, ext int64, now time.Time) {
	if !sess.decided {
		sess.held = append(sess.held, it)
		sess.heldRTP = append(sess.heldRTP, ext)
		sess.heldBytes += len(it.data)
		if sess.video.haveSR || now.Sub(sess.firstPacket) >= sess.s.opts.SenderReportWait || sess.heldBytes > maxHeldBytes {
			sess.decide(now)
		}
		return
	}
	sess.push(it, ext)
}

// push queues a stamped frame.
func (sess *rtspSession) push(it rtspItem, ext int64) {
	if it.cut {
		sess.tracks = it.tracks
		sess.s.q.setTracks(it.tracks)
		return
	}
	t := sess.video
	if it.track == 2 {
		t = sess.audio
	}
	if !t.anchored {
		sess.anchor(t)
	}
	it.at = t.at(ext)
	sess.s.q.push(it)
}

// anchor fixes when t's extended timestamp anchorExt was: by its own sender report when the
// timing is the camera's and it has one, else by its first packet's receive time moved by the
// offset measured on the video.
func (sess *rtspSession) anchor(t *rtspTrack) {
	t.anchored = true
	if sess.ntp && t.haveSR {
		t.anchorAt, t.anchorExt = t.srNTP, int64(int32(t.srRTP-t.firstTS)) //nolint:gosec // signed difference
		return
	}
	t.anchorAt, t.anchorExt = t.firstRecv.Add(sess.offset), 0
}

// decide anchors each track's RTP clock, then queues the frames held. With a sender report on
// the video track the camera's NTP clock is used: each track by its own report, or, for a track
// without one, its receive time moved by the offset between the camera's clock and the receive
// clock measured on the video. Without one, the receive clock is used.
func (sess *rtspSession) decide(now time.Time) {
	sess.decided = true
	v := sess.video
	sess.ntp = v.haveSR
	s := sess.s
	switch {
	case sess.ntp:
		sess.anchor(v)
		sess.offset = v.at(0).Sub(v.firstRecv)
		offset := sess.offset
		s.clockOffset.Store(&offset)
		s.info("camera %s%s: timestamps from the camera's clock (RTCP sender reports, NTP), %v from this machine's", s.camera, s.path, sess.offset.Round(time.Millisecond))
	case s.clockOffset.Load() != nil:
		// An earlier session had the camera's clock: keep to it, rather than jump by its offset.
		sess.offset = *s.clockOffset.Load()
		sess.anchor(v)
		s.info("camera %s%s: no RTCP sender report within %v: timestamps from the time frames are received, moved by %v to the camera's clock (as measured before)",
			s.camera, s.path, now.Sub(sess.firstPacket).Round(time.Millisecond), sess.offset.Round(time.Millisecond))
	default:
		sess.anchor(v)
		s.info("camera %s%s: no RTCP sender report within %v: timestamps from the time frames are received", s.camera, s.path, now.Sub(sess.firstPacket).Round(time.Millisecond))
	}
	sess.s.q.setTracks(sess.tracks)
	for i, it := range sess.held {
		sess.push(it, sess.heldRTP[i])
	}
	sess.held, sess.heldRTP, sess.heldBytes = nil, nil, 0
}
