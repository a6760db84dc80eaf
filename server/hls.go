package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/openkvs/kvs/mkv/mpegts"
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

// playback is the state of the HLS and GetClip APIs. An HLS session lives in its token (see
// hlsSession), so that any node holding the key can serve it; what playback keeps are caches any
// node can rebuild from the store, and the count of sessions this node issued per stream.
type playback struct {
	s   *Server
	key []byte // HMAC-SHA256 key of session tokens (Config.SessionKey)

	mu        sync.Mutex
	issued    map[string]map[string]time.Time // stream → token → expiry, for hlsMaxSessions
	trackKeys map[fragmentKey]string          // a fragment's track identity (trackKey), immutable
	states    map[string]*sessionState        // token → what this node keeps for it (LIVE counts, LIVE_REPLAY origin)
	segs      segShares                       // the media segments being made or sent (remux.go)
}

// fragmentKey names a fragment across deletes: a stream created again under its name has
// another ARN.
type fragmentKey struct {
	arn    string
	number uint64
}

// Cache bounds: past them a cache is emptied and rebuilt from the store as needed.
const (
	hlsKeyCacheSize   = 100_000 // ~100 B each
	hlsStateCacheSize = 10_000
)

// newPlayback returns the playback state of s.
func newPlayback(s *Server) *playback {
	return &playback{s: s, key: s.cfg.SessionKey, issued: map[string]map[string]time.Time{},
		trackKeys: map[fragmentKey]string{}, states: map[string]*sessionState{}}
}

// hlsSession is one GetHLSStreamingSessionURL answer: what to list, until when. It never changes
// after creation and travels in its token (hlstoken.go), signed, so that any node that has the
// key serves it (Config.SessionKey; with the default per-process key a restart ends it).
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
	target   int    // EXT-X-TARGETDURATION of the first playlist; later ones never go below it
	first    uint64 // LIVE: the first fragment listed at creation, where discontinuities are counted from
	ts       bool   // ContainerFormat MPEG_TS: getTSFragment.ts segments (mkv/mpegts), no EXT-X-MAP

	// MPEG-DASH sessions (dash.go) are HLS sessions with a manifest in place of the playlists.
	dash       bool
	showNumber bool          // DisplayFragmentNumber ALWAYS
	offset     time.Duration // wall clock minus producer time of the live edge at creation (dynamic manifests)
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

// sessionNames are the request's member names that errors quote: HLS's, or DASH's (dash.go).
type sessionNames struct{ selector, max string }

var hlsNames = sessionNames{"HLSFragmentSelector", "MaxMediaPlaylistFragmentResults"}

// parseHLSRequest validates r into a session (without stream, token and times); names are the
// request's member names for errors. Choices:
//   - LIVE takes no TimestampRange; LIVE_REPLAY needs StartTimestamp (EndTimestamp optional);
//     ON_DEMAND needs both, at most 24 h apart.
//   - ContainerFormat MPEG_TS lists getTSFragment.ts segments (MPEG-2 transport stream,
//     mkv/mpegts) in place of the fMP4 init and media segments; everything else is the same.
//   - DiscontinuityMode defaults to ON_DISCONTINUITY for both selector types (KVS: ALWAYS for
//     SERVER_TIMESTAMP). KVS puts a marker between all server-timestamped fragments because it
//     places them on the server's clock; kvs always places fragments by their producer
//     timestamps, which are continuous, so markers are needed only at real gaps. ALWAYS and
//     NEVER are honoured when asked for.
func parseHLSRequest(r *getHLSRequest, names sessionNames) (*hlsSession, int64, error) {
	sess := &hlsSession{kind: store.ServerTime}
	var err error
	if sess.mode, err = enumMember("PlaybackMode", r.PlaybackMode, "LIVE", "LIVE", "LIVE_REPLAY", "ON_DEMAND"); err != nil {
		return nil, 0, err
	}
	var tr *timestampRange
	if sel := r.HLSFragmentSelector; sel != nil {
		var kind string
		if kind, err = enumMember(names.selector+".FragmentSelectorType", sel.FragmentSelectorType, "SERVER_TIMESTAMP", "SERVER_TIMESTAMP", "PRODUCER_TIMESTAMP"); err != nil {
			return nil, 0, err
		}
		if kind == "PRODUCER_TIMESTAMP" {
			sess.kind = store.ProducerTime
		}
		tr = sel.TimestampRange
	}
	switch sess.mode {
	case "LIVE":
		if tr != nil {
			return nil, 0, invalidArgf("%s.TimestampRange must not be set when PlaybackMode is LIVE.", names.selector)
		}
	case "LIVE_REPLAY":
		if tr == nil || tr.StartTimestamp == nil {
			return nil, 0, invalidArgf("%s.TimestampRange.StartTimestamp is required when PlaybackMode is LIVE_REPLAY.", names.selector)
		}
		sess.start = tr.StartTimestamp.Time
		if tr.EndTimestamp != nil {
			sess.end = tr.EndTimestamp.Time
		}
	case "ON_DEMAND":
		if tr == nil || tr.StartTimestamp == nil || tr.EndTimestamp == nil {
			return nil, 0, invalidArgf("%s.TimestampRange with StartTimestamp and EndTimestamp is required when PlaybackMode is ON_DEMAND.", names.selector)
		}
		sess.start, sess.end = tr.StartTimestamp.Time, tr.EndTimestamp.Time
	}
	if !sess.end.IsZero() && !sess.end.After(sess.start) {
		return nil, 0, invalidArgf("TimestampRange.EndTimestamp must be after StartTimestamp.")
	}
	if !sess.end.IsZero() && sess.end.Sub(sess.start) > hlsMaxOnDemandWindow {
		return nil, 0, invalidArgf("TimestampRange may span at most 24 hours.")
	}
	container, err := enumMember("ContainerFormat", r.ContainerFormat, "FRAGMENTED_MP4", "FRAGMENTED_MP4", "MPEG_TS")
	sess.ts = container == "MPEG_TS"
	if err == nil {
		sess.disc, err = enumMember("DiscontinuityMode", r.DiscontinuityMode, "ON_DISCONTINUITY", "ALWAYS", "NEVER", "ON_DISCONTINUITY")
	}
	if err == nil {
		sess.showTime, err = alwaysMember("DisplayFragmentTimestamp", r.DisplayFragmentTimestamp)
	}
	if err != nil {
		return nil, 0, err
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
			return nil, 0, invalidArgf("%s must be between 1 and %d.", names.max, hlsMaxFragments)
		}
		sess.max = int(n)
	}
	return sess, expires, nil
}

// getHLSStreamingSessionURL implements GetHLSStreamingSessionURL (kvs-api.md §9). The
// session is checked as KVS checks it before answering: the stream keeps data
// (NoDataRetentionException), it has fragments to play (ResourceNotFoundException: none in the
// range, or for LIVE none received in the last 30 s) and their codecs can be served
// (UnsupportedStreamMediaType / MissingCodecPrivateData / InvalidCodecPrivateData). Sessions
// are self-contained signed tokens that any node with the key can serve until they expire (see
// Config.SessionKey); at most 10 issued by one node are active per stream
// (ClientLimitExceededException): in a cluster the limit is per node, since no node sees the
// others' tokens.
func (p *playback) getHLSStreamingSessionURL(ctx context.Context, req *getHLSRequest) (hlsSessionURL, error) {
	sess, expires, err := parseHLSRequest(req, hlsNames)
	if err != nil {
		return hlsSessionURL{}, err
	}
	if err := p.open(ctx, req.streamRef, sess, expires); err != nil {
		return hlsSessionURL{}, err
	}
	return hlsSessionURL{endpointOf(ctx) + hlsPathPrefix + "getHLSMasterPlaylist.m3u8?SessionToken=" + sess.token}, nil
}

// open completes sess, parsed from a request for stream ref, into a signed session that expires
// in expires seconds, checking what GetHLSStreamingSessionURL and GetDASHStreamingSessionURL
// check, and counts it against the stream's limit.
func (p *playback) open(ctx context.Context, ref streamRef, sess *hlsSession, expires int64) error {
	s := p.s
	st, err := s.lookupStream(ctx, ref, codeInvalidArgument)
	if err != nil {
		return err
	}
	if err := requireRetention(st); err != nil {
		return err
	}
	now := s.cfg.Now()
	sess.stream, sess.arn = st.Name, st.ARN
	// Whole milliseconds and seconds: what the token carries.
	sess.created = now.Truncate(time.Millisecond)
	sess.expires = now.Add(time.Duration(expires) * time.Second).Truncate(time.Second)

	frags, _, _, err := p.list(ctx, sess)
	if err != nil {
		return fmt.Errorf("streaming session %s: %w", st.Name, err)
	}
	if len(frags) == 0 || (sess.mode == "LIVE" && now.Sub(frags[len(frags)-1].ServerTime) > hlsLiveRecency) {
		msg := "No fragments found in the requested timestamp range."
		if sess.mode == "LIVE" {
			msg = "No fragments were received in the last 30 seconds."
		}
		return apiErrorf(codeResourceNotFound, "%s", msg)
	}
	last := frags[len(frags)-1]
	tracks, _, err := p.describe(ctx, st.Name, last.Number)
	if err != nil {
		return err
	}
	if sess.ts {
		if err := mpegts.Check(tracks); err != nil {
			return mediaError(err)
		}
	}
	sess.target = targetDuration(frags, 1)
	if sess.mode == "LIVE" {
		sess.first = frags[0].Number
	}
	if sess.dash {
		// A dynamic manifest's clock (dash.go): the live edge's end is available at its
		// arrival (LIVE), or now (LIVE_REPLAY, whose reveal starts at creation), and later
		// fragments a target duration after their end and that offset: players ask for a
		// segment as soon as the manifest's clock says it is there, and one that came a little
		// late would be a 404, which GStreamer does not retry.
		edge := last.ProducerTime.Add(last.Duration)
		at := sess.created
		if sess.mode == "LIVE" {
			at = last.ServerTime
		}
		sess.offset = (at.Sub(edge) + time.Duration(sess.target)*time.Second).Truncate(time.Millisecond)
	}
	sess.token = p.sign(sess)
	if !p.issue(sess, now) {
		return apiErrorf(codeClientLimitExceeded, "The stream %s already has %d active streaming sessions (HLS and DASH).", st.Name, hlsMaxSessions)
	}
	return nil
}

type hlsSessionURL struct {
	HLSStreamingSessionURL string `json:"HLSStreamingSessionURL"`
}

// issue counts sess against its stream's hlsMaxSessions on this node; false when the stream
// has that many active already.
func (p *playback) issue(sess *hlsSession, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.issued[sess.stream]
	for t, exp := range set {
		if !now.Before(exp) {
			delete(set, t)
		}
	}
	if len(set) >= hlsMaxSessions {
		return false
	}
	if set == nil {
		set = map[string]time.Time{}
		p.issued[sess.stream] = set
	}
	set[sess.token] = sess.expires
	return true
}

// streamDeleted forgets the deleted stream's sessions; their tokens fail from now on anyway (the
// ARN they name is gone).
func (p *playback) streamDeleted(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.issued, name)
}

// session returns the live session named by r's SessionToken, or the error to send: an HLS
// session, or a DASH one when dash is set. As from KVS, an expired session is 403
// NotAuthorizedException "Streaming session token is expired" (the status KVS sends for it, not
// the model's 401; API_reader_GetHLSStreamingSessionURL: NotAuthorizedException "or the token has
// expired"); a token this server did not sign (or of the other protocol) is 404 ResourceNotFound,
// as is one whose stream is gone. Players treat them alike (hls.js retries no 4xx, ffmpeg's HLS
// reader ends on a playlist it cannot reload), the console renews on any 4xx (player.js), and
// only the SDK-less player sees the status, so the type tells a person what happened.
func (p *playback) session(r *http.Request, dash bool) (*hlsSession, error) {
	tok := r.URL.Query().Get("SessionToken")
	if tok == "" {
		return nil, invalidArgf("SessionToken is required.")
	}
	sess, ok := p.verify(tok)
	if !ok || sess.dash != dash {
		return nil, apiErrorf(codeResourceNotFound, "The streaming session is not found.")
	}
	if !p.s.cfg.Now().Before(sess.expires) {
		return nil, &APIError{Code: codeNotAuthorized, Message: "Streaming session token is expired.", Status: http.StatusForbidden}
	}
	// Only a stream that is gone ends the session: a failing store is a 500 that players retry
	// (hls.js retries no 4xx), not a 404 that stops them.
	st, err := p.s.store.GetStream(r.Context(), sess.stream)
	if err != nil && !errors.Is(err, store.ErrStreamNotFound) {
		return nil, fmt.Errorf("streaming session of %s: %w", sess.stream, err)
	}
	if err != nil || st.ARN != sess.arn {
		return nil, apiErrorf(codeResourceNotFound, "The stream of the streaming session is not found or not active.")
	}
	return sess, nil
}
