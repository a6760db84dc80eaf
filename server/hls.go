package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/fmp4"
	"github.com/openkvs/kvs/server/store"
)

// HLS limits and defaults (kvs-api.md §9).
const (
	hlsPathPrefix        = "/hls/v1/"
	hlsMaxSessions       = 10 // active sessions per stream
	hlsDefaultExpires    = 300
	hlsMinExpires        = 300
	hlsMaxExpires        = 43200
	hlsMaxFragments      = 5000
	hlsDefaultLive       = 5
	hlsDefaultOnDemand   = 1000
	hlsMaxOnDemandWindow = 24 * time.Hour
	// hlsLiveRecency: a LIVE session needs a fragment received within this long (KVS: "no
	// fragments within the last 30 seconds" is ResourceNotFoundException).
	hlsLiveRecency = 30 * time.Second
	// hlsGapThreshold: with DiscontinuityMode ON_DISCONTINUITY, consecutive fragments get an
	// EXT-X-DISCONTINUITY when the next one starts more than this after the previous one ends
	// (or that much before). It is 2-3 frame intervals at 25-30 fps: timestamp jitter of a live
	// encoder (a few ms) never trips it, a dropped fragment or a producer restart always does.
	hlsGapThreshold = 100 * time.Millisecond
	// hlsDefaultBandwidth is the BANDWIDTH of the master playlist when no fragment tells better.
	hlsDefaultBandwidth = 2_000_000
)

// KVS error codes of the playback APIs.
const (
	codeNoDataRetention     = "NoDataRetentionException"
	codeUnsupportedMedia    = "UnsupportedStreamMediaTypeException"
	codeMissingCodecPrivate = "MissingCodecPrivateDataException"
	codeInvalidCodecPrivate = "InvalidCodecPrivateDataException"
	codeInvalidMediaFrame   = "InvalidMediaFrameException"
)

func init() { routeSets = append(routeSets, (*Server).playbackRoutes) }

// playback is the state of the HLS and GetClip APIs: the HLS sessions.
type playback struct {
	s *Server

	mu       sync.Mutex
	sessions map[string]*hlsSession // by token
}

// playbackRoutes registers GetHLSStreamingSessionURL and GetClip (POST, like every KVS
// operation) and the HLS playback URLs (GET: hls.js, Safari, ffmpeg and every other player fetch
// them with plain GETs).
func (s *Server) playbackRoutes() map[string]http.HandlerFunc {
	p := &playback{s: s, sessions: map[string]*hlsSession{}}
	s.onStreamDeleted(p.streamDeleted)
	s.getRoutes[hlsPathPrefix+"getHLSMasterPlaylist.m3u8"] = p.handleMasterPlaylist
	s.getRoutes[hlsPathPrefix+"getHLSMediaPlaylist.m3u8"] = p.handleMediaPlaylist
	s.getRoutes[hlsPathPrefix+"getMP4InitFragment.mp4"] = p.handleInitFragment
	s.getRoutes[hlsPathPrefix+"getMP4MediaFragment.mp4"] = p.handleMediaFragment
	return map[string]http.HandlerFunc{
		"/getHLSStreamingSessionURL": p.handleGetHLSStreamingSessionURL,
		"/getClip":                   p.handleGetClip,
	}
}

// hlsSession is one GetHLSStreamingSessionURL answer: what to list, until when. The fields above
// mu never change after creation.
type hlsSession struct {
	token    string
	stream   string // name
	arn      string // to tell a re-created stream of the same name
	mode     string // LIVE, LIVE_REPLAY, ON_DEMAND
	kind     store.TimeKind
	start    time.Time // LIVE_REPLAY, ON_DEMAND
	end      time.Time // zero: open (LIVE_REPLAY only)
	disc     string    // ALWAYS, NEVER, ON_DISCONTINUITY
	showTime bool      // DisplayFragmentTimestamp ALWAYS
	max      int
	created  time.Time
	expires  time.Time

	mu        sync.Mutex
	target    int               // EXT-X-TARGETDURATION so far: it may grow, never shrink
	trackKeys map[uint64]string // fragment number → its tracks' identity (immutable, cached)
	discs     map[uint64]bool   // fragment number → a discontinuity precedes it in this session
}

type getHLSRequest struct {
	streamRef
	PlaybackMode                    *string           `json:"PlaybackMode"`
	HLSFragmentSelector             *fragmentSelector `json:"HLSFragmentSelector"`
	ContainerFormat                 *string           `json:"ContainerFormat"`
	DiscontinuityMode               *string           `json:"DiscontinuityMode"`
	DisplayFragmentTimestamp        *string           `json:"DisplayFragmentTimestamp"`
	Expires                         *int64            `json:"Expires"`
	MaxMediaPlaylistFragmentResults *int64            `json:"MaxMediaPlaylistFragmentResults"`
}

// parseHLSRequest validates r into a session (without stream, token and times). Choices:
//   - LIVE takes no TimestampRange; LIVE_REPLAY needs StartTimestamp (EndTimestamp optional);
//     ON_DEMAND needs both, at most 24 h apart.
//   - ContainerFormat MPEG_TS is InvalidArgumentException: kvs serves fragmented MP4 only.
//   - DiscontinuityMode defaults to ON_DISCONTINUITY for both selector types (KVS: ALWAYS for
//     SERVER_TIMESTAMP). KVS puts a marker between all server-timestamped fragments because it
//     places them on the server's clock; kvs always places fragments by their producer
//     timestamps, which are continuous, so markers are needed only at real gaps. ALWAYS and
//     NEVER are honoured when asked for.
func parseHLSRequest(r *getHLSRequest) (*hlsSession, int64, error) {
	sess := &hlsSession{mode: "LIVE", kind: store.ServerTime, disc: "ON_DISCONTINUITY"}
	if r.PlaybackMode != nil {
		switch *r.PlaybackMode {
		case "LIVE", "LIVE_REPLAY", "ON_DEMAND":
			sess.mode = *r.PlaybackMode
		default:
			return nil, 0, invalidArgf("PlaybackMode must be LIVE, LIVE_REPLAY or ON_DEMAND.")
		}
	}
	var tr *timestampRange
	if sel := r.HLSFragmentSelector; sel != nil {
		if sel.FragmentSelectorType != nil {
			switch *sel.FragmentSelectorType {
			case "SERVER_TIMESTAMP":
			case "PRODUCER_TIMESTAMP":
				sess.kind = store.ProducerTime
			default:
				return nil, 0, invalidArgf("HLSFragmentSelector.FragmentSelectorType must be SERVER_TIMESTAMP or PRODUCER_TIMESTAMP.")
			}
		}
		tr = sel.TimestampRange
	}
	switch sess.mode {
	case "LIVE":
		if tr != nil {
			return nil, 0, invalidArgf("HLSFragmentSelector.TimestampRange must not be set when PlaybackMode is LIVE.")
		}
	case "LIVE_REPLAY":
		if tr == nil || tr.StartTimestamp == nil {
			return nil, 0, invalidArgf("HLSFragmentSelector.TimestampRange.StartTimestamp is required when PlaybackMode is LIVE_REPLAY.")
		}
		sess.start = tr.StartTimestamp.Time
		if tr.EndTimestamp != nil {
			sess.end = tr.EndTimestamp.Time
		}
	case "ON_DEMAND":
		if tr == nil || tr.StartTimestamp == nil || tr.EndTimestamp == nil {
			return nil, 0, invalidArgf("HLSFragmentSelector.TimestampRange with StartTimestamp and EndTimestamp is required when PlaybackMode is ON_DEMAND.")
		}
		sess.start, sess.end = tr.StartTimestamp.Time, tr.EndTimestamp.Time
		if sess.end.Sub(sess.start) > hlsMaxOnDemandWindow {
			return nil, 0, invalidArgf("TimestampRange may span at most 24 hours.")
		}
	}
	if !sess.end.IsZero() && !sess.end.After(sess.start) {
		return nil, 0, invalidArgf("TimestampRange.EndTimestamp must be after StartTimestamp.")
	}
	if r.ContainerFormat != nil {
		switch *r.ContainerFormat {
		case "FRAGMENTED_MP4":
		case "MPEG_TS":
			return nil, 0, invalidArgf("ContainerFormat MPEG_TS is not supported by kvs; use FRAGMENTED_MP4.")
		default:
			return nil, 0, invalidArgf("ContainerFormat must be FRAGMENTED_MP4 or MPEG_TS.")
		}
	}
	if r.DiscontinuityMode != nil {
		switch *r.DiscontinuityMode {
		case "ALWAYS", "NEVER", "ON_DISCONTINUITY":
			sess.disc = *r.DiscontinuityMode
		default:
			return nil, 0, invalidArgf("DiscontinuityMode must be ALWAYS, NEVER or ON_DISCONTINUITY.")
		}
	}
	if r.DisplayFragmentTimestamp != nil {
		switch *r.DisplayFragmentTimestamp {
		case "ALWAYS":
			sess.showTime = true
		case "NEVER":
		default:
			return nil, 0, invalidArgf("DisplayFragmentTimestamp must be ALWAYS or NEVER.")
		}
	}
	expires := int64(hlsDefaultExpires)
	if r.Expires != nil {
		if *r.Expires < hlsMinExpires || *r.Expires > hlsMaxExpires {
			return nil, 0, invalidArgf("Expires must be between %d and %d seconds.", hlsMinExpires, hlsMaxExpires)
		}
		expires = *r.Expires
	}
	sess.max = hlsDefaultLive
	if sess.mode == "ON_DEMAND" {
		sess.max = hlsDefaultOnDemand
	}
	if r.MaxMediaPlaylistFragmentResults != nil {
		n := *r.MaxMediaPlaylistFragmentResults
		if n < 1 || n > hlsMaxFragments {
			return nil, 0, invalidArgf("MaxMediaPlaylistFragmentResults must be between 1 and %d.", hlsMaxFragments)
		}
		sess.max = int(n)
	}
	return sess, expires, nil
}

// handleGetHLSStreamingSessionURL implements GetHLSStreamingSessionURL (kvs-api.md §9). The
// session is checked as KVS checks it before answering: the stream keeps data
// (NoDataRetentionException), it has fragments to play (ResourceNotFoundException: none in the
// range, or for LIVE none received in the last 30 s) and their codecs can be served
// (UnsupportedStreamMediaType / MissingCodecPrivateData / InvalidCodecPrivateData). Sessions
// live in memory until they expire (a restart ends them); at most 10 are active per stream
// (ClientLimitExceededException).
func (p *playback) handleGetHLSStreamingSessionURL(w http.ResponseWriter, r *http.Request) {
	s := p.s
	var req getHLSRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sess, expires, err := parseHLSRequest(&req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := requireRetention(st); err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.cfg.Now()
	sess.stream, sess.arn = st.Name, st.ARN
	sess.created, sess.expires = now, now.Add(time.Duration(expires)*time.Second)
	sess.trackKeys, sess.discs = map[uint64]string{}, map[uint64]bool{}

	frags, _, _, err := p.list(ctx, sess)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("get hls streaming session url %s: %w", st.Name, err))
		return
	}
	if len(frags) == 0 || (sess.mode == "LIVE" && now.Sub(frags[len(frags)-1].ServerTime) > hlsLiveRecency) {
		msg := "No fragments found in the requested timestamp range."
		if sess.mode == "LIVE" {
			msg = "No fragments were received in the last 30 seconds."
		}
		s.writeError(w, r, apiErrorf(codeResourceNotFound, "%s", msg))
		return
	}
	if _, _, err := p.describe(ctx, st.Name, frags[len(frags)-1].Number); err != nil {
		s.writeError(w, r, err)
		return
	}
	tok := make([]byte, 24)
	_, _ = rand.Read(tok) // crypto/rand.Read never fails (Go 1.24+)
	sess.token = base64.RawURLEncoding.EncodeToString(tok)
	p.mu.Lock()
	active := 0
	for t, o := range p.sessions {
		switch {
		case !now.Before(o.expires):
			delete(p.sessions, t)
		case o.stream == st.Name:
			active++
		}
	}
	if active >= hlsMaxSessions {
		p.mu.Unlock()
		s.writeError(w, r, apiErrorf(codeClientLimitExceeded, "The stream %s already has %d active HLS streaming sessions.", st.Name, hlsMaxSessions))
		return
	}
	p.sessions[sess.token] = sess
	p.mu.Unlock()
	s.writeJSON(w, r, struct {
		HLSStreamingSessionURL string `json:"HLSStreamingSessionURL"`
	}{s.dataEndpoint(r) + hlsPathPrefix + "getHLSMasterPlaylist.m3u8?SessionToken=" + sess.token})
}

func (p *playback) streamDeleted(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, sess := range p.sessions {
		if sess.stream == name {
			delete(p.sessions, t)
		}
	}
}

// session returns the live session named by r's SessionToken, or the error to send.
func (p *playback) session(r *http.Request) (*hlsSession, error) {
	tok := r.URL.Query().Get("SessionToken")
	if tok == "" {
		return nil, invalidArgf("SessionToken is required.")
	}
	p.mu.Lock()
	sess := p.sessions[tok]
	p.mu.Unlock()
	if sess == nil || !p.s.cfg.Now().Before(sess.expires) {
		return nil, apiErrorf(codeResourceNotFound, "The streaming session is not found or has expired.")
	}
	st, err := p.s.store.GetStream(r.Context(), sess.stream)
	if err != nil || st.ARN != sess.arn {
		return nil, apiErrorf(codeResourceNotFound, "The stream of the streaming session is not found or not active.")
	}
	return sess, nil
}

// list returns the fragments the session's media playlist shows now, in playlist order, the
// media sequence number of the first, and whether the playlist is complete (EXT-X-ENDLIST).
//
//   - LIVE: the newest max fragments by number (ingestion order); the media sequence number is
//     the first one's fragment number, so it grows by one per fragment that slides out (a
//     number reserved but never stored, after a failed upload, skips one).
//   - LIVE_REPLAY: the fragments from the start timestamp on (to the end timestamp, if set), in
//     timestamp order, revealed at the pace of real time as KVS does: the first max at once,
//     then each one when the session has run as long as the media before it; the window shows
//     the newest max of those revealed. Complete once an end timestamp is set, every fragment up
//     to it is revealed, and the stream has a fragment past it.
//   - ON_DEMAND: the first max fragments of the range in timestamp order; always complete.
func (p *playback) list(ctx context.Context, sess *hlsSession) (frags []store.FragmentMeta, seq uint64, ended bool, err error) {
	m := p.s.media
	st := store.Stream{Name: sess.stream, RetentionHours: 1}
	buf := m.buffer(st)
	switch sess.mode {
	case "LIVE":
		frags, err = p.newest(ctx, sess.stream, buf, sess.max)
		if len(frags) > 0 {
			seq = frags[0].Number
		}
		return frags, seq, false, err
	case "ON_DEMAND":
		frags, err = p.inRange(ctx, sess.stream, buf, sess.kind, sess.start, sess.end, sess.max)
		return frags, 0, true, err
	}
	end := sess.end
	if end.IsZero() {
		end = time.Unix(0, 1<<62)
	}
	all, err := p.inRange(ctx, sess.stream, buf, sess.kind, sess.start, end, 0)
	if err != nil || len(all) == 0 {
		return nil, 0, false, err
	}
	timeOf := func(f store.FragmentMeta) time.Time {
		if sess.kind == store.ProducerTime {
			return f.ProducerTime
		}
		return f.ServerTime
	}
	first := timeOf(all[0])
	span := timeOf(all[min(sess.max, len(all))-1]).Sub(first)
	elapsed := p.s.cfg.Now().Sub(sess.created)
	shown := 0
	for shown < len(all) && timeOf(all[shown]).Sub(first) <= elapsed+span {
		shown++
	}
	from := max(0, shown-sess.max)
	if !sess.end.IsZero() && shown == len(all) {
		after, err := p.inRange(ctx, sess.stream, buf, sess.kind, sess.end.Add(time.Nanosecond), time.Unix(0, 1<<62), 1)
		if err != nil {
			return nil, 0, false, err
		}
		ended = len(after) > 0
	}
	return all[from:shown], uint64(from), ended, nil
}

// newest returns up to n of the stream's newest fragments in number order, from the store and
// the live buffer.
func (p *playback) newest(ctx context.Context, name string, buf *streamBuffer, n int) ([]store.FragmentMeta, error) {
	last := buf.lastNumber()
	if l, err := p.s.store.Last(ctx, name); err == nil {
		last = max(last, l.Number)
	} else if !errors.Is(err, store.ErrFragmentNotFound) {
		return nil, err
	}
	if last == 0 {
		return nil, nil
	}
	from := last - min(last-1, uint64(3*n))
	frags, err := p.s.store.Range(ctx, name, from, 0)
	if err != nil {
		return nil, err
	}
	seen := make(map[uint64]bool, len(frags))
	for _, f := range frags {
		seen[f.Number] = true
	}
	for _, f := range buf.snapshot() {
		if f.Meta.Number >= from && !seen[f.Meta.Number] {
			frags = append(frags, f.Meta)
		}
	}
	sort.Slice(frags, func(i, j int) bool { return frags[i].Number < frags[j].Number })
	return frags[max(0, len(frags)-n):], nil
}

// inRange returns the fragments whose kind timestamp is in [start, end], in (timestamp, number)
// order, at most limit of them (0: all), paging through the store like ListFragments.
func (p *playback) inRange(ctx context.Context, name string, buf *streamBuffer, kind store.TimeKind, start, end time.Time, limit int) ([]store.FragmentMeta, error) {
	q := listQuery{Kind: "S", Start: clampNanos(start), End: clampNanos(end), Number: ^uint64(0)}
	if kind == store.ProducerTime {
		q.Kind = "P"
	}
	q.After = q.Start - 1
	var out []store.FragmentMeta
	const page = maxListFragments
	for {
		got, err := p.s.media.listPage(ctx, name, buf, q, page)
		if err != nil {
			return nil, err
		}
		n := min(len(got), page)
		out = append(out, got[:n]...)
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if len(got) <= page {
			return out, nil
		}
		last := got[n-1]
		q.After, q.Number = q.time(last), last.Number
	}
}

// fragment returns fragment n parsed: from the live buffer when it is still there, else from
// the store.
func (p *playback) fragment(ctx context.Context, name string, n uint64) (*mkv.Fragment, store.FragmentMeta, error) {
	buf := p.s.media.buffer(store.Stream{Name: name, RetentionHours: 1})
	var b []byte
	var meta store.FragmentMeta
	if f := buf.acquire(n); f != nil {
		defer f.release() // the FragmentReader copies the frames
		b, meta = f.Chunk, f.Meta
	} else {
		var err error
		if b, meta, err = readChunk(ctx, p.s.store, name, n, nil); err != nil {
			return nil, meta, err
		}
	}
	f, err := mkv.NewFragmentReader(bytes.NewReader(b)).Next()
	if err != nil {
		return nil, meta, fmt.Errorf("fragment %d: %w", n, err)
	}
	return f, meta, nil
}

// tracks returns the tracks of fragment n, reading only the chunk's header.
func (p *playback) tracks(ctx context.Context, name string, n uint64) ([]mkv.Track, error) {
	var rd io.Reader
	buf := p.s.media.buffer(store.Stream{Name: name, RetentionHours: 1})
	if f := buf.acquire(n); f != nil {
		defer f.release()
		rd = bytes.NewReader(f.Chunk)
	} else {
		rc, _, err := p.s.store.Open(ctx, name, n)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		rd = rc
	}
	r := mkv.NewReader(rd)
	for {
		ev, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("fragment %d: %w", n, err)
		}
		switch ev.Kind {
		case mkv.EventTracks:
			return ev.Tracks, nil
		case mkv.EventCluster:
			return nil, fmt.Errorf("fragment %d: %w", n, fmp4.ErrUnsupportedCodec)
		}
	}
}

// describe returns the tracks of fragment n and what a player needs to know about them, or the
// KVS error for media that cannot be served.
func (p *playback) describe(ctx context.Context, name string, n uint64) ([]mkv.Track, fmp4.Media, error) {
	tracks, err := p.tracks(ctx, name, n)
	if err != nil {
		return nil, fmp4.Media{}, mediaError(err)
	}
	m, err := fmp4.Describe(tracks)
	if err != nil {
		return nil, m, mediaError(err)
	}
	return tracks, m, nil
}

// mediaError maps remuxing errors to their KVS error types; others pass through.
func mediaError(err error) error {
	var te *fmp4.TrackError
	switch {
	case errors.Is(err, fmp4.ErrUnsupportedCodec):
		msg := "The stream's media type is not supported: HLS and GetClip need H.264 or H.265 video, optionally with AAC audio."
		if errors.As(err, &te) && te.CodecID != "" {
			msg = fmt.Sprintf("Track %d has codec %s; HLS and GetClip need H.264 or H.265 video, optionally with AAC audio.", te.Track, te.CodecID)
		}
		return apiErrorf(codeUnsupportedMedia, "%s", msg)
	case errors.Is(err, fmp4.ErrMissingCodecPrivate):
		errors.As(err, &te)
		return apiErrorf(codeMissingCodecPrivate, "Track %d has no codec private data.", trackOf(te))
	case errors.Is(err, fmp4.ErrInvalidCodecPrivate):
		errors.As(err, &te)
		return apiErrorf(codeInvalidCodecPrivate, "Track %d has invalid codec private data.", trackOf(te))
	case errors.Is(err, fmp4.ErrEmptyFragment), errors.Is(err, fmp4.ErrUnknownTrack),
		errors.Is(err, fmp4.ErrTimeRange), errors.Is(err, fmp4.ErrFrameTooLarge):
		return apiErrorf(codeInvalidMediaFrame, "A fragment cannot be converted to MP4: %v.", err)
	case errors.Is(err, store.ErrFragmentNotFound):
		return apiErrorf(codeResourceNotFound, "The fragment is no longer available.")
	}
	return err
}

func trackOf(te *fmp4.TrackError) uint64 {
	if te == nil {
		return 0
	}
	return te.Track
}

// trackKey identifies a fragment's tracks as far as MP4 is concerned: a change of key needs a new
// init segment (EXT-X-MAP) and a discontinuity.
func trackKey(tracks []mkv.Track) string {
	var b strings.Builder
	for _, t := range tracks {
		fmt.Fprintf(&b, "%d/%s/%x/%dx%d/%g/%d;", t.Number, t.CodecID, t.CodecPrivate, t.Width, t.Height, t.SamplingRate, t.Channels)
	}
	return b.String()
}

// keys returns the track keys of frags, cached per session.
func (p *playback) keys(ctx context.Context, sess *hlsSession, frags []store.FragmentMeta) ([]string, error) {
	out := make([]string, len(frags))
	for i, f := range frags {
		sess.mu.Lock()
		k, ok := sess.trackKeys[f.Number]
		sess.mu.Unlock()
		if !ok {
			tracks, err := p.tracks(ctx, sess.stream, f.Number)
			if errors.Is(err, store.ErrFragmentNotFound) {
				k = "" // expired between listing and reading: it will fail when fetched
			} else if err != nil {
				return nil, err
			} else {
				k = trackKey(tracks)
			}
			sess.mu.Lock()
			sess.trackKeys[f.Number] = k
			sess.mu.Unlock()
		}
		out[i] = k
	}
	return out, nil
}

func writePlaylist(w http.ResponseWriter, body []byte, live bool) {
	h := w.Header()
	h.Set("Content-Type", "application/vnd.apple.mpegurl")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Access-Control-Allow-Origin", "*")
	if live {
		h.Set("Cache-Control", "no-cache")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// handleMasterPlaylist serves getHLSMasterPlaylist.m3u8: one variant with the stream's CODECS,
// RESOLUTION and a BANDWIDTH from the listed fragments' peak bit rate.
func (p *playback) handleMasterPlaylist(w http.ResponseWriter, r *http.Request) {
	s := p.s
	sess, err := p.session(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	frags, _, _, err := p.list(ctx, sess)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("hls master playlist %s: %w", sess.stream, err))
		return
	}
	if len(frags) == 0 {
		s.writeError(w, r, apiErrorf(codeResourceNotFound, "No fragments found for the streaming session."))
		return
	}
	_, m, err := p.describe(ctx, sess.stream, frags[len(frags)-1].Number)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bandwidth := 0
	for _, f := range frags {
		if f.Duration > 0 {
			bandwidth = max(bandwidth, int(float64(f.Size*8)/f.Duration.Seconds()))
		}
	}
	if bandwidth == 0 {
		bandwidth = hlsDefaultBandwidth
	}
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,CODECS=\"%s\",RESOLUTION=%dx%d\n",
		bandwidth, strings.Join(m.Codecs, ","), m.Width, m.Height)
	fmt.Fprintf(&b, "getHLSMediaPlaylist.m3u8?SessionToken=%s\n", sess.token)
	writePlaylist(w, b.Bytes(), false)
}

// handleMediaPlaylist serves getHLSMediaPlaylist.m3u8 (see list for what each mode shows).
// Segments are fragments, EXTINF their FragmentLengthInMilliseconds. EXT-X-MAP names the init
// segment of the first fragment and is repeated, after an EXT-X-DISCONTINUITY, wherever the
// tracks change. DiscontinuityMode ON_DISCONTINUITY marks gaps and overlaps of more than
// hlsGapThreshold between consecutive fragments' producer timestamps. EXT-X-DISCONTINUITY-SEQUENCE
// counts the markers that slid out of a LIVE window.
func (p *playback) handleMediaPlaylist(w http.ResponseWriter, r *http.Request) {
	s := p.s
	sess, err := p.session(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	frags, seq, ended, err := p.list(ctx, sess)
	if err == nil && len(frags) == 0 {
		err = apiErrorf(codeResourceNotFound, "No fragments found for the streaming session.")
	}
	var keys []string
	if err == nil {
		keys, err = p.keys(ctx, sess, frags)
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("hls media playlist %s: %w", sess.stream, err))
		return
	}

	sess.mu.Lock()
	target := sess.target
	for _, f := range frags {
		target = max(target, int(math.Ceil(f.Duration.Seconds())))
	}
	target = max(target, 1)
	sess.target = target
	// Discontinuities: decide each boundary once and remember it, so that the count of those
	// that slid out of the window stays right.
	disc := make([]bool, len(frags))
	for i := 1; i < len(frags); i++ {
		prev, cur := frags[i-1], frags[i]
		switch {
		case keys[i] != keys[i-1] && keys[i] != "" && keys[i-1] != "":
			disc[i] = true
		case sess.disc == "ALWAYS":
			disc[i] = true
		case sess.disc == "ON_DISCONTINUITY":
			gap := cur.ProducerTime.Sub(prev.ProducerTime.Add(prev.Duration))
			disc[i] = gap > hlsGapThreshold || gap < -hlsGapThreshold
		}
		sess.discs[cur.Number] = disc[i]
	}
	var discSeq int
	for n, d := range sess.discs {
		if d && n < frags[0].Number && sess.mode == "LIVE" {
			discSeq++
		}
	}
	sess.mu.Unlock()
	if sess.mode != "LIVE" {
		// LIVE_REPLAY and ON_DEMAND lists are in timestamp order: count the markers before the
		// window directly (the ones a growing LIVE_REPLAY window slid past are rare; recounting
		// them would need the whole list again).
		discSeq = 0
	}

	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:%d\n", target, seq)
	if discSeq > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", discSeq)
	}
	if sess.mode == "ON_DEMAND" {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	for i, f := range frags {
		if disc[i] {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		if i == 0 || keys[i] != keys[i-1] {
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken=%s&FragmentNumber=%s\"\n",
				sess.token, formatFragmentNumber(f.Number))
		}
		if sess.showTime {
			t := f.ProducerTime
			if sess.kind == store.ServerTime {
				t = f.ServerTime
			}
			fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", t.UTC().Format("2006-01-02T15:04:05.000Z"))
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\ngetMP4MediaFragment.mp4?SessionToken=%s&FragmentNumber=%s\n",
			f.Duration.Seconds(), sess.token, formatFragmentNumber(f.Number))
	}
	if ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	writePlaylist(w, b.Bytes(), !ended)
}

// fragmentParam parses the FragmentNumber query parameter.
func fragmentParam(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("FragmentNumber")
	if v == "" {
		return 0, invalidArgf("FragmentNumber is required.")
	}
	n, err := parseFragmentNumber(v)
	if err != nil {
		return 0, fragmentNotFound(v)
	}
	return n, nil
}

func writeMP4(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "video/mp4")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cache-Control", "max-age=86400") // a fragment never changes
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// handleInitFragment serves getMP4InitFragment.mp4: the init segment for the tracks of the
// fragment named by FragmentNumber (kvs's playlists always name one); without it, of the newest
// fragment of the session's list.
func (p *playback) handleInitFragment(w http.ResponseWriter, r *http.Request) {
	s := p.s
	sess, err := p.session(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	var n uint64
	if r.URL.Query().Has("FragmentNumber") {
		if n, err = fragmentParam(r); err != nil {
			s.writeError(w, r, err)
			return
		}
	} else {
		frags, _, _, err := p.list(ctx, sess)
		if err == nil && len(frags) == 0 {
			err = apiErrorf(codeResourceNotFound, "No fragments found for the streaming session.")
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		n = frags[len(frags)-1].Number
	}
	tracks, _, err := p.describe(ctx, sess.stream, n)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	init, err := fmp4.NewInit(tracks)
	if err != nil {
		s.writeError(w, r, mediaError(err))
		return
	}
	writeMP4(w, init)
}

// handleMediaFragment serves getMP4MediaFragment.mp4: the fragment remuxed on request from its
// stored chunk (live buffer or store) into one moof + mdat. Its timeline is the producer
// timestamp since the Unix epoch (90 kHz for video), the same for every session, so segments
// from any request line up.
func (p *playback) handleMediaFragment(w http.ResponseWriter, r *http.Request) {
	s := p.s
	sess, err := p.session(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	n, err := fragmentParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, meta, err := p.fragment(r.Context(), sess.stream, n)
	if errors.Is(err, store.ErrFragmentNotFound) {
		err = fragmentNotFound(formatFragmentNumber(n))
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("hls media fragment %s: %w", sess.stream, err))
		return
	}
	seg, err := fmp4.AppendMediaSegment(nil, uint32(n), f, time.Duration(meta.ProducerTime.UnixNano()))
	if err != nil {
		s.writeError(w, r, mediaError(err))
		return
	}
	writeMP4(w, seg)
}
