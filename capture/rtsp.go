package capture

// RTSP cameras: the Source of an rtsp:// or rtsps:// URL, built on github.com/bluenviron/gortsplib.
// This file holds the options, the errors and the Source (its queue, reconnects and end);
// rtspsession.go holds one RTSP session: the DESCRIBE/SETUP/PLAY exchange, depacketizing and
// timestamps.

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/openkvs/kvs/mkv"
)

// Defaults for the zero fields of RTSPOptions.
const (
	DefaultRTSPReadTimeout      = 10 * time.Second
	DefaultRTSPSenderReportWait = 5 * time.Second
	DefaultRTSPReconnectWait    = time.Second
	maxRTSPReconnectWait        = 30 * time.Second
)

// RTSP transports, as RTSPOptions.Transport and --rtsp-transport take them.
const (
	RTSPTransportTCP  = "tcp"  // RTP interleaved in the RTSP connection: passes NAT and firewalls, no loss
	RTSPTransportUDP  = "udp"  // RTP over UDP: less delay, but packets can be lost
	RTSPTransportAuto = "auto" // UDP, then TCP when no UDP packet comes
)

// RTSPOptions configures an RTSP source. The zero value plays over TCP until the context given to
// OpenRTSP is cancelled.
type RTSPOptions struct {
	// Transport is RTSPTransportTCP (default), RTSPTransportUDP or RTSPTransportAuto.
	Transport string
	// TLSConfig verifies rtsps:// cameras; nil verifies them against the system's roots. It is
	// cloned for each connection.
	TLSConfig *tls.Config
	// Duration stops the source after this much wall-clock time from the call to OpenRTSP,
	// whether the camera sends or not: ReadFrame returns the frames received before, then io.EOF.
	// 0 plays until ctx is cancelled.
	Duration time.Duration
	// ReadTimeout bounds each RTSP request, and a camera that sends nothing for this long is
	// taken as dropped (default DefaultRTSPReadTimeout).
	ReadTimeout time.Duration
	// SenderReportWait is how long a session waits for the camera's first RTCP sender report
	// before it stamps frames with the receive clock instead of the camera's NTP clock (default
	// DefaultRTSPSenderReportWait). Frames are held meanwhile (at most 32 MiB).
	SenderReportWait time.Duration
	// ReconnectWait is the first wait before reconnecting to a camera that dropped (default
	// DefaultRTSPReconnectWait); it doubles after each failed attempt (a session that ends
	// before its first keyframe is one), up to 30 s.
	ReconnectWait time.Duration
	// Notice, if set, receives warnings: audio tracks skipped, packets lost (at most every 10 s),
	// a camera that dropped, failed reconnects. Info, if set, receives the rest of the story: the
	// timing in use, a camera reconnected. They are called from the source's goroutines, one call
	// at a time.
	Notice func(msg string)
	Info   func(msg string)
}

func (o RTSPOptions) withDefaults() (RTSPOptions, error) {
	o.Transport = cmp.Or(o.Transport, RTSPTransportTCP)
	if o.Transport != RTSPTransportTCP && o.Transport != RTSPTransportUDP && o.Transport != RTSPTransportAuto {
		return o, fmt.Errorf("rtsp transport %q: want tcp, udp or auto", o.Transport)
	}
	o.ReadTimeout = cmp.Or(o.ReadTimeout, DefaultRTSPReadTimeout)
	o.SenderReportWait = cmp.Or(o.SenderReportWait, DefaultRTSPSenderReportWait)
	o.ReconnectWait = cmp.Or(o.ReconnectWait, DefaultRTSPReconnectWait)
	if o.Duration < 0 || o.ReadTimeout < 0 || o.SenderReportWait < 0 || o.ReconnectWait < 0 {
		return o, errors.New("rtsp: durations must not be negative")
	}
	return o, nil
}

// Validate checks the options as OpenRTSP would, without connecting: callers use it to report
// bad flags as usage errors.
func (o RTSPOptions) Validate() error {
	_, err := o.withDefaults()
	return err
}

// IsRTSPSpec reports whether spec is an rtsp:// or rtsps:// URL.
func IsRTSPSpec(spec string) bool {
	s := strings.ToLower(spec)
	return strings.HasPrefix(s, "rtsp://") || strings.HasPrefix(s, "rtsps://")
}

// CheckRTSPURL reports, without connecting, whether raw is an RTSP URL OpenRTSP can use: rtsp://
// or rtsps://, with a host. The error shows the URL without its password.
func CheckRTSPURL(raw string) error {
	u, err := base.ParseURL(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		// url.Parse's reason quotes the piece that does not parse, which with user info is
		// often a piece of the password (rtsp://admin:pa/ss@cam: invalid port ":pa").
		return fmt.Errorf("%s: the URL does not parse: a user name or password holding / ? # @ %% or a space must be percent-encoded (/ as %%2F, ? as %%3F, # as %%23, @ as %%40, %% as %%25, space as %%20)", RedactRTSP(raw))
	case err != nil:
		// url.Parse's *url.Error quotes the whole URL: keep only its reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", RedactRTSP(raw), err)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%s: no camera host in the URL", RedactRTSP(raw))
	}
	return nil
}

// RedactRTSP returns the URL without its password, for logs and messages; an URL that does not
// parse is returned as its scheme and "…".
func RedactRTSP(raw string) string {
	u, err := base.ParseURL(raw)
	if err != nil {
		scheme, _, _ := strings.Cut(raw, "://")
		return scheme + "://…"
	}
	// url.URL.Redacted writes the password as "xxxxx" (a user name cannot hold ':').
	return strings.Replace((*url.URL)(u).Redacted(), ":xxxxx@", ":***@", 1)
}

// Errors of the RTSP source, wrapped in an *RTSPError that names the camera; match with errors.Is.
var (
	ErrRTSPUnauthorized = errors.New("401 Unauthorized: the camera refused the user name and password (give them in the URL: rtsp://user:password@host/path)")
	ErrRTSPNotFound     = errors.New("404 Not Found: the camera has no stream at this path (its manual or web page gives the RTSP path)")
	ErrRTSPRefused      = errors.New("connection refused: nothing listens at this address (is the camera on, and the port right? RTSP's default port is 554, RTSPS's 322)")
	ErrRTSPUnsupported  = errors.New("no H.264 or H.265 video: kvs takes H.264 or H.265 video (and AAC audio); set the camera's video encoder to H.264")
	ErrRTSPNoKeyframe   = errors.New("no video keyframe came: is the camera sending video?")
)

// RTSPError is an error about one camera: Camera is its host:port (never the password), Path the
// URL path.
type RTSPError struct {
	Camera string
	Path   string
	Err    error
}

func (e *RTSPError) Error() string {
	return fmt.Sprintf("camera %s%s: %v", e.Camera, e.Path, e.Err)
}

func (e *RTSPError) Unwrap() error { return e.Err }

// OpenRTSP connects to the camera at rawURL (rtsp:// or rtsps://, with user:password@ when it
// asks for them), plays its first H.264 or H.265 video track and its first AAC audio track
// (MPEG4-GENERIC or MP4A-LATM; other audio codecs are skipped, and Notice is told), and returns
// once the first video keyframe has come. A camera that cannot be reached, refuses the credentials (401), has no such path (404), or
// offers no H.264/H.265 video fails here within seconds with an *RTSPError; OpenRTSP does not
// retry.
//
// The Source has a video track 1 (CodecPrivate from the parameter sets of the SDP or, when they
// are in the stream, of the first keyframe) and, when the camera sends AAC, an audio track 2. It
// implements LiveClock. Frames keep the camera's timing: their RTP timestamps, anchored to the
// NTP time of the camera's RTCP sender report when one comes within SenderReportWait (else to the
// time the first packet was received, moved after a reconnect by the offset of the camera's clock
// that an earlier session measured; Info says which). A change of parameter sets on a
// keyframe (a new picture size) makes ReadFrame return ErrDiscontinuity, with the new tracks.
//
// When the camera drops or stops sending for ReadTimeout, the source reconnects with backoff
// (1 s doubling to 30 s) for as long as it runs, telling Notice; ReadFrame returns
// ErrDiscontinuity at the gap. A keyframe that lost packets is dropped, with the frames up to
// the next whole keyframe (Notice is told). Frames that ReadFrame's caller does not take fast enough are
// dropped up to the next keyframe (the queue holds 64 MiB), also with ErrDiscontinuity.
//
// Cancelling ctx, or Duration passing, stops the capture: ReadFrame returns the frames already
// received and then io.EOF. Cancelling the ctx given to ReadFrame makes it return ctx.Err().
// Close stops the capture and waits for its goroutines.
func OpenRTSP(ctx context.Context, rawURL string, opts RTSPOptions) (Source, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := CheckRTSPURL(rawURL); err != nil {
		return nil, err
	}
	u, _ := base.ParseURL(rawURL)
	s := &rtspSource{
		openedAt: time.Now(),
		opts:     opts,
		url:      u,
		camera:   cameraAddr(u),
		path:     u.Path,
		done:     make(chan struct{}),
		first:    make(chan error, 1),
		q:        newRTSPQueue(),
	}
	s.q.notice = s.notice
	s.stop, s.cancel = context.WithCancel(ctx)
	sess, err := s.dial(s.stop)
	if err != nil {
		s.cancel()
		return nil, s.wrap(err)
	}
	go s.run(sess)
	wait := max(opts.ReadTimeout, 10*time.Second) + opts.SenderReportWait
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-s.q.firstFrame:
	case err := <-s.first:
		s.Close()
		return nil, s.wrap(err)
	case <-timer.C:
		s.Close()
		return nil, s.wrap(fmt.Errorf("%w (none within %v of PLAY)", ErrRTSPNoKeyframe, wait))
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	s.tracks = s.q.firstTracks()
	s.t0 = s.q.firstTime()
	if opts.Duration > 0 {
		// One timer for the capture, not one per ReadFrame: at the end of Duration the capture
		// stops, and ReadFrame returns what was received before, then io.EOF.
		s.durTimer = time.AfterFunc(time.Until(s.openedAt.Add(opts.Duration)), s.cancel)
	}
	return s, nil
}

// cameraAddr is the camera's host:port, with the default port when the URL has none.
func cameraAddr(u *base.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "rtsps" {
		return u.Host + ":322"
	}
	return u.Host + ":554"
}

// CameraLink is implemented by the Sources OpenRTSP returns: the state of the connection to the
// camera. Its methods are safe for concurrent use.
type CameraLink interface {
	// Connected reports whether a session with the camera is playing now.
	Connected() bool
	// Reconnects counts the times the camera was connected again after it dropped.
	Reconnects() int
}

// rtspSource is the Source OpenRTSP returns. Its goroutine (run) owns the current session and
// reconnects; sessions push frames into q, which ReadFrame takes from.
type rtspSource struct {
	opts   RTSPOptions
	url    *base.URL
	camera string
	path   string

	stop   context.Context // done when the capture must end
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	first  chan error    // the first session ended before its first frame

	q *rtspQueue

	connected  atomic.Bool
	reconnects atomic.Int64

	// The camera's clock minus the receive clock, as the last session with a sender report
	// measured it: a session without one stamps frames on the camera's clock with it.
	// nil: no session has measured it yet.
	clockOffset atomic.Pointer[time.Duration]

	noticeMu sync.Mutex

	// Owned by the reader.
	tracks   []mkv.Track
	t0       time.Time // time of the first frame: PTS 0
	openedAt time.Time
	durTimer *time.Timer   // ends the capture after Duration (cancel), nil without one
	shift    time.Duration // added to PTS after the camera's clock went back
	maxPTS   time.Duration
	newRun   bool // the next frame follows a discontinuity
	lastDTS  map[uint64]time.Duration
	ended    bool
	endErr   error

	closeOnce sync.Once
}

func (s *rtspSource) notice(format string, args ...any) { s.tell(s.opts.Notice, format, args...) }

func (s *rtspSource) info(format string, args ...any) { s.tell(s.opts.Info, format, args...) }

func (s *rtspSource) tell(fn func(string), format string, args ...any) {
	if fn == nil {
		return
	}
	s.noticeMu.Lock()
	defer s.noticeMu.Unlock()
	fn(fmt.Sprintf(format, args...))
}

func (s *rtspSource) wrap(err error) error {
	var re *RTSPError
	if errors.As(err, &re) || errors.Is(err, context.Canceled) {
		return err
	}
	return &RTSPError{Camera: s.camera, Path: s.path, Err: err}
}

// run waits for the session to end and reconnects, until the capture stops.
func (s *rtspSource) run(sess *rtspSession) {
	defer close(s.done)
	defer s.connected.Store(false)
	// Sessions in a row that ended before their first keyframe: a camera that accepts PLAY and
	// drops the session at once is backed off from as one that refuses the connection is.
	fruitless := 0
	for {
		s.connected.Store(true)
		err := sess.wait()
		s.connected.Store(false)
		if s.stop.Err() != nil {
			return
		}
		if !s.q.started() {
			s.first <- err // OpenRTSP reports it: no retries at start
			return
		}
		if sess.gotKeyframe() {
			fruitless = 0
		} else {
			fruitless++
		}
		s.q.pushCut()
		s.notice("camera %s%s: %v; reconnecting (the next fragment starts at its next keyframe)", s.camera, s.path, err)
		lost := time.Now()
		for attempt := 1; ; attempt++ {
			wait := s.opts.ReconnectWait << min(fruitless+attempt-1, 5)
			if err := sleepOrDone(s.stop, min(wait, maxRTSPReconnectWait)); err != nil {
				return
			}
			sess, err = s.dial(s.stop)
			if err == nil {
				s.reconnects.Add(1)
				s.info("camera %s%s: reconnected after %v", s.camera, s.path, time.Since(lost).Round(100*time.Millisecond))
				break
			}
			if s.stop.Err() != nil {
				return
			}
			if attempt&(attempt-1) == 0 { // attempts 1, 2, 4, 8, ...: not a line every 30 s for hours
				s.notice("camera %s%s: reconnect attempt %d: %v", s.camera, s.path, attempt, err)
			}
		}
	}
}

// sleepOrDone waits d or until ctx is done.
func sleepOrDone(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connected reports whether a session is playing.
func (s *rtspSource) Connected() bool { return s.connected.Load() }

// Reconnects counts reconnections after drops.
func (s *rtspSource) Reconnects() int { return int(s.reconnects.Load()) }

// Tracks returns the video track 1 and, when the camera sends AAC, the audio track 2; after
// ReadFrame returned ErrDiscontinuity, the tracks of the frames that follow.
func (s *rtspSource) Tracks() []mkv.Track { return s.tracks }

// Start returns the time of the first frame (PTS 0): the camera's NTP clock, or the receive clock.
func (s *rtspSource) Start() time.Time { return s.t0 }

// ReadFrame returns the next frame, ErrDiscontinuity at a gap or a change of tracks, and io.EOF
// once the capture stopped and the frames received before are read.
func (s *rtspSource) ReadFrame(ctx context.Context) (Frame, error) {
	if s.ended {
		return Frame{}, s.endErr
	}
	for {
		if it, ok := s.q.pop(); ok {
			if it.cut {
				if it.tracks != nil {
					s.tracks = it.tracks
				}
				s.newRun = true
				return Frame{}, ErrDiscontinuity
			}
			return s.emit(it), nil
		}
		if s.stop.Err() != nil { // Close, the ctx of OpenRTSP, or the end of Duration
			return s.end(io.EOF)
		}
		select {
		case <-s.q.signal:
		case <-s.stop.Done():
		case <-ctx.Done():
			return Frame{}, ctx.Err()
		}
	}
}

// emit turns a queued frame into a Frame: PTS from the first frame, DTS the largest PTS so far on
// its track (RTP carries presentation times only; Matroska stores nothing else). After a
// discontinuity, a camera clock that went back is shifted to continue after the last frame.
func (s *rtspSource) emit(it rtspItem) Frame {
	pts := it.at.Sub(s.t0) + s.shift
	if s.newRun {
		s.newRun = false
		if pts <= s.maxPTS {
			back := s.maxPTS - pts
			s.shift += back + 40*time.Millisecond
			pts += back + 40*time.Millisecond
			s.notice("camera %s%s: its clock went back %v across the reconnect: timestamps continue after the last frame", s.camera, s.path, back.Round(time.Millisecond))
		}
	}
	s.maxPTS = max(s.maxPTS, pts)
	if s.lastDTS == nil {
		s.lastDTS = map[uint64]time.Duration{}
	}
	dts := max(s.lastDTS[it.track], pts)
	s.lastDTS[it.track] = dts
	return Frame{Track: it.track, PTS: pts, DTS: dts, Keyframe: it.key, Data: it.data}
}

func (s *rtspSource) end(err error) (Frame, error) {
	s.ended, s.endErr = true, err
	return Frame{}, err
}

// Close stops the capture and waits for the session to close. Safe to call more than once.
func (s *rtspSource) Close() error {
	s.closeOnce.Do(func() {
		if s.durTimer != nil {
			s.durTimer.Stop()
		}
		s.cancel()
		<-s.done
	})
	return nil
}

// rtspItem is a frame in the queue, or a cut (ErrDiscontinuity) with the tracks that follow.
type rtspItem struct {
	track  uint64
	at     time.Time // presentation time on the camera's clock (or the receive clock)
	key    bool
	data   []byte
	cut    bool
	tracks []mkv.Track // with cut: the new tracks, nil when unchanged
}

// rtspQueue holds the frames between the sessions (which push) and ReadFrame (which pops). It is
// bounded: past 64 MiB or 4096 frames it drops frames up to the next video keyframe, which it
// precedes with a cut.
type rtspQueue struct {
	mu         sync.Mutex
	items      []rtspItem
	bytes      int
	signal     chan struct{} // a wake-up for pop's waiter, 1-buffered
	firstFrame chan struct{} // closed at the first frame
	tracks     []mkv.Track   // the tracks of the last frames pushed
	first      []mkv.Track   // the tracks of the first frame (later ones may differ by then)
	t0         time.Time
	dropping   bool
	dropped    int
	notice     func(format string, args ...any)
}

const (
	maxRTSPQueueBytes = 64 << 20
	maxRTSPQueueItems = 4096
)

func newRTSPQueue() *rtspQueue {
	return &rtspQueue{signal: make(chan struct{}, 1), firstFrame: make(chan struct{})}
}

func (q *rtspQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// started reports whether a frame was ever pushed.
func (q *rtspQueue) started() bool {
	select {
	case <-q.firstFrame:
		return true
	default:
		return false
	}
}

func (q *rtspQueue) firstTracks() []mkv.Track {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.first
}

func (q *rtspQueue) firstTime() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.t0
}

// setTracks tells the tracks of the frames pushed next: a cut with them when they differ from
// the last ones (none before the first frame: they are the source's first tracks).
func (q *rtspQueue) setTracks(tracks []mkv.Track) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tracks == nil {
		q.tracks = tracks
		return
	}
	if mkv.SameTracks(q.tracks, tracks) {
		return
	}
	q.tracks = tracks
	q.items = append(q.items, rtspItem{cut: true, tracks: tracks})
	q.wake()
}

// pushCut queues a cut (the session ended).
func (q *rtspQueue) pushCut() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, rtspItem{cut: true})
	q.wake()
}

// push queues a frame, or drops it when the queue is full (then up to the next video keyframe).
func (q *rtspQueue) push(it rtspItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dropping {
		if it.track != 1 || !it.key {
			q.dropped++
			return
		}
		q.dropping = false
		q.items = append(q.items, rtspItem{cut: true})
		q.notice("rtsp: the reader fell behind: dropped %d frames up to this keyframe", q.dropped)
		q.dropped = 0
	}
	if len(q.items) >= maxRTSPQueueItems || q.bytes+len(it.data) > maxRTSPQueueBytes {
		q.dropping = true
		q.dropped++
		return
	}
	if !q.started() {
		q.t0, q.first = it.at, q.tracks
		close(q.firstFrame)
	}
	q.items = append(q.items, it)
	q.bytes += len(it.data)
	q.wake()
}

// pop takes the oldest item, if any.
func (q *rtspQueue) pop() (rtspItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return rtspItem{}, false
	}
	it := q.items[0]
	q.items[0] = rtspItem{}
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let the array go
	}
	q.bytes -= len(it.data)
	return it, true
}
