// Package testcam is an RTSP camera for tests and benchmarks: a gortsplib server whose paths play
// media files (the testdata clips) in a loop, in real time, as IP cameras do. It records what it
// sent, so that tests can check that every frame arrived; it can ask for a password, send RTCP
// sender reports with its own clock, drop its readers or stop sending for a while, and serve a
// codec kvs does not take.
package testcam

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/mkv"
)

// Config configures a Camera.
type Config struct {
	// Addr is where RTSP listens; "" means 127.0.0.1:0.
	Addr string
	// User and Password, when set, are asked of every reader (401 without them).
	User, Password string
	// TLS, when set, serves RTSPS.
	TLS *tls.Config
	// UDP also offers the UDP transport (on two free ports of 127.0.0.1).
	UDP bool
}

// PathConfig is what one path plays.
type PathConfig struct {
	// Clips are played one after the other, then again (Loops times; 0: until Close). They must
	// have the same codecs; a later clip may have another picture size (its parameter sets then
	// go in-band, as a camera does after a change).
	Clips []string
	Loops int
	// SenderReports sends RTCP sender reports with the camera's clock (Clock) before the first
	// packet and every second; without them the reader has only RTP timestamps.
	SenderReports bool
	// SenderReportPlays, when set, sends sender reports to the first SenderReportPlays PLAYs
	// only: a reader that reconnects then has none, as when a camera's next report comes after
	// the reader stopped waiting for it.
	SenderReportPlays int
	// Clock is the camera clock's time when playback starts (default: the local time then).
	Clock time.Time
	// InBandParams puts the parameter sets before every keyframe instead of in the SDP.
	InBandParams bool
	// LATM sends the AAC audio as MP4A-LATM (RFC 6416, the config in the SDP) instead of
	// MPEG4-GENERIC, as some cameras do.
	LATM bool
	// G711 adds a G.711 audio track that sends nothing (a codec kvs skips).
	G711 bool
	// LoseKeyframePacket, when set, loses the middle RTP packet of the LoseKeyframePacket-th
	// video keyframe sent (1 is the first), as a lossy network does: the reader sees a gap in
	// the sequence numbers. That keyframe is Lost in Sent.
	LoseKeyframePacket int
}

// SentFrame is a frame the camera delivered to a reader.
type SentFrame struct {
	Track int // 1 video, 2 audio
	// Time is the frame's presentation time on the camera's clock.
	Time time.Time
	Key  bool
	// Lost is set on a frame that lost a packet (PathConfig.LoseKeyframePacket).
	Lost bool
}

// Camera is the RTSP server. Its methods are safe for concurrent use.
type Camera struct {
	srv  *gortsplib.Server
	cfg  Config
	mu   sync.Mutex
	path map[string]*path
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Start starts the camera.
func Start(cfg Config) (*Camera, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	c := &Camera{cfg: cfg, path: map[string]*path{}}
	c.ctx, c.stop = context.WithCancel(context.Background())
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	c.srv = &gortsplib.Server{
		Handler:                  c,
		RTSPAddress:              l.Addr().String(),
		TLSConfig:                cfg.TLS,
		DisableRTCPSenderReports: true, // gortsplib 4.16 writes the NTP fraction in nanoseconds: send RFC 3550 ones
		Listen:                   func(string, string) (net.Listener, error) { return l, nil },
	}
	if cfg.UDP {
		if c.srv.UDPRTPAddress, c.srv.UDPRTCPAddress, err = udpPorts(); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := c.srv.Start(); err != nil {
		l.Close()
		return nil, err
	}
	return c, nil
}

// udpPorts finds two free consecutive UDP ports, the first even.
func udpPorts() (string, string, error) {
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", "", err
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port &^ 1
		pc.Close()
		a, errA := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		b, errB := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		for _, x := range []net.PacketConn{a, b} {
			if x != nil {
				x.Close()
			}
		}
		if errA == nil && errB == nil {
			return fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.1:%d", p+1), nil
		}
	}
	return "", "", errors.New("testcam: no two free consecutive UDP ports")
}

// Addr returns host:port.
func (c *Camera) Addr() string { return c.srv.RTSPAddress }

// URL returns the URL of a path, with the credentials when the camera asks for them.
func (c *Camera) URL(p string) string {
	scheme := "rtsp"
	if c.cfg.TLS != nil {
		scheme = "rtsps"
	}
	auth := ""
	if c.cfg.User != "" {
		auth = c.cfg.User + ":" + c.cfg.Password + "@"
	}
	return fmt.Sprintf("%s://%s%s/%s", scheme, auth, c.Addr(), strings.TrimPrefix(p, "/"))
}

// Close stops playback and the server.
func (c *Camera) Close() {
	c.stop()
	c.wg.Wait()
	c.srv.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.path {
		p.stream.Close()
	}
}

// AddPath serves cfg at path p. Playback starts at the first PLAY.
func (c *Camera) AddPath(p string, cfg PathConfig) error {
	clips, err := loadClips(cfg.Clips)
	if err != nil {
		return err
	}
	pt, err := newPath(c.srv, cfg, clips)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path[strings.TrimPrefix(p, "/")] = pt
	return nil
}

// AddUnsupported serves a path with MJPEG video and G.711 audio only.
func (c *Camera) AddUnsupported(p string) error {
	desc := &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.MJPEG{}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 8, MULaw: false, SampleRate: 8000, ChannelCount: 1}}},
	}}
	st := &gortsplib.ServerStream{Server: c.srv, Desc: desc}
	if err := st.Initialize(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path[strings.TrimPrefix(p, "/")] = &path{stream: st, done: make(chan struct{}), sessions: map[*gortsplib.ServerSession]bool{}}
	return nil
}

// Sent returns the frames path p delivered: written while a reader played it, from the first
// video keyframe after that reader's PLAY. A reader that works gets exactly these.
func (c *Camera) Sent(p string) []SentFrame {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return append([]SentFrame(nil), pt.sent...)
}

// Drops returns, for each Drop of path p that closed a session, how many frames Sent held then:
// the frames before that index, the last of them possibly lost in flight.
func (c *Camera) Drops(p string) []int {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return append([]int(nil), pt.drops...)
}

// PlayStarts returns, for each PLAY of path p, how many frames Sent held then: the frames from
// that index on were sent to that reader (from its first keyframe).
func (c *Camera) PlayStarts(p string) []int {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return append([]int(nil), pt.playStarts...)
}

// Done returns a channel closed when path p has played all its loops.
func (c *Camera) Done(p string) <-chan struct{} { return c.get(p).done }

// Plays returns how many PLAY requests path p got.
func (c *Camera) Plays(p string) int {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.plays
}

// Drop closes the sessions of the readers of path p, as a camera that reboots does; playback
// goes on. Frames written just before may be lost with the connection although Sent counts them
// (queued in the RTSP server's session, or in a socket that the close resets): Drops says where
// each drop fell in Sent.
func (c *Camera) Drop(p string) {
	pt := c.get(p)
	pt.mu.Lock()
	if len(pt.sessions) > 0 {
		pt.drops = append(pt.drops, len(pt.sent))
	}
	var ss []*gortsplib.ServerSession
	for s := range pt.sessions {
		ss = append(ss, s)
		delete(pt.sessions, s) // nothing written from now on counts as sent
	}
	pt.mu.Unlock()
	for _, s := range ss {
		s.Close()
	}
}

// Freeze makes path p send nothing for d (its clock runs on: the frames of that time are lost).
func (c *Camera) Freeze(p string, d time.Duration) {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.frozenUntil = time.Now().Add(d)
}

// Stall makes path p send no RTP for d, as a camera whose encoder hung does, while its RTCP
// sender reports go on (with SenderReports; their clock runs on): the connection stays busy,
// but no frame comes. The frames of that time are lost.
func (c *Camera) Stall(p string, d time.Duration) {
	pt := c.get(p)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.stallUntil = time.Now().Add(d)
	pt.sinceKey = false // after the stall, the reader needs a keyframe again
}

func (c *Camera) get(p string) *path {
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.path[strings.TrimPrefix(p, "/")]
	if pt == nil {
		panic("testcam: no path " + p) // a test's mistake
	}
	return pt
}

// lookup finds the path of a request, checking credentials first.
func (c *Camera) lookup(conn *gortsplib.ServerConn, req *base.Request, p string) (*path, *base.Response, error) {
	if c.cfg.User != "" && !conn.VerifyCredentials(req, c.cfg.User, c.cfg.Password) {
		return nil, &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.path[strings.TrimPrefix(p, "/")]
	if pt == nil {
		return nil, &base.Response{StatusCode: base.StatusNotFound}, nil
	}
	return pt, &base.Response{StatusCode: base.StatusOK}, nil
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (c *Camera) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	pt, res, err := c.lookup(ctx.Conn, ctx.Request, ctx.Path)
	if pt == nil {
		return res, nil, err
	}
	return res, pt.stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (c *Camera) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	pt, res, err := c.lookup(ctx.Conn, ctx.Request, ctx.Path)
	if pt == nil {
		return res, nil, err
	}
	return res, pt.stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay: the reader counts once its session has
// settled (packets written before it is active would be counted but not received).
func (c *Camera) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	pt, res, err := c.lookup(ctx.Conn, ctx.Request, ctx.Path)
	if pt == nil {
		return res, err
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.sessions[ctx.Session] = true
	pt.plays++
	pt.playStarts = append(pt.playStarts, len(pt.sent))
	pt.settleUntil = time.Now().Add(settle)
	pt.sinceKey = false
	if !pt.started && pt.clips != nil {
		pt.started = true
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			pt.play(c.ctx)
		}()
	}
	return res, nil
}

// settle is how long after a PLAY the camera sends nothing.
const settle = 100 * time.Millisecond

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (c *Camera) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pt := range c.path {
		pt.mu.Lock()
		delete(pt.sessions, ctx.Session)
		pt.mu.Unlock()
	}
}

// clip is a media file read into memory.
type clip struct {
	tracks []mkv.Track
	frames []capture.Frame
	span   time.Duration // from the first frame to after the last
}

func loadClips(names []string) ([]*clip, error) {
	if len(names) == 0 {
		return nil, errors.New("testcam: a path needs a clip")
	}
	var out []*clip
	for _, name := range names {
		cl, err := loadClip(name)
		if err != nil {
			return nil, fmt.Errorf("testcam: %s: %w", name, err)
		}
		if len(out) > 0 && len(cl.tracks) != len(out[0].tracks) {
			return nil, fmt.Errorf("testcam: %s has other tracks than %s", name, names[0])
		}
		out = append(out, cl)
	}
	return out, nil
}

func loadClip(name string) (*clip, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	src, err := capture.Open(context.Background(), f, name, capture.Options{})
	if err != nil {
		f.Close()
		return nil, err
	}
	defer src.Close()
	cl := &clip{tracks: src.Tracks()}
	var end time.Duration
	for {
		fr, err := src.ReadFrame(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		step := 40 * time.Millisecond
		for _, t := range cl.tracks {
			if t.Number == fr.Track && t.DefaultDuration > 0 {
				step = t.DefaultDuration
			}
		}
		end = max(end, fr.PTS+step)
		cl.frames = append(cl.frames, fr)
	}
	if len(cl.frames) == 0 {
		return nil, errors.New("no frames")
	}
	cl.span = end - cl.frames[0].PTS
	return cl, nil
}

// StartTest starts a camera for test t, closed when the test ends, with path "cam" playing p
// (none when p has no clips).
func StartTest(t testing.TB, cfg Config, p PathConfig) *Camera {
	t.Helper()
	cam, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	if len(p.Clips) > 0 {
		if err := cam.AddPath("cam", p); err != nil {
			t.Fatal(err)
		}
	}
	return cam
}
