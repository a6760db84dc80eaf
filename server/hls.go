package server

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"sync"
	"time"

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
