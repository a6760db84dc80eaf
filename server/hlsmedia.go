package server

// HLS media: the fMP4 init and media fragments of a session, or its MPEG-TS fragments, remuxed
// from stored or live MKV fragments (mkv/fmp4, mkv/mpegts).

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
	"github.com/openkvs/kvs/mkv/mpegts"
	"github.com/openkvs/kvs/server/store"
)

// includes reports whether fragment f is part of the session, which serves only the media of its
// stream, time range and mode (a token must not open the rest of the stream's archive): for LIVE,
// the fragments from the first one listed at creation on; else those whose timestamp of the
// selector's kind is in the range.
func (sess *hlsSession) includes(f store.FragmentMeta) bool {
	if sess.mode == "LIVE" {
		return f.Number >= sess.first
	}
	t := f.Time(sess.kind)
	return !t.Before(sess.start) && (sess.end.IsZero() || !t.After(sess.end))
}

// admit turns the lookup of fragment n (meta, err) into what the session answers: a fragment
// that is gone, or not part of the session (includes), is ResourceNotFound naming it.
func (sess *hlsSession) admit(n uint64, meta store.FragmentMeta, err error) error {
	if err == nil && !sess.includes(meta) {
		err = store.ErrFragmentNotFound
	}
	if errors.Is(err, store.ErrFragmentNotFound) {
		return fragmentNotFound(formatFragmentNumber(n))
	}
	return err
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
	case errors.Is(err, mpegts.ErrNotADTS):
		errors.As(err, &te)
		return apiErrorf(codeUnsupportedMedia, "Track %d is AAC that MPEG-TS cannot carry (ADTS has only the standard sampling rates and 1024-sample frames); use ContainerFormat FRAGMENTED_MP4.",
			trackOf(te))
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
	case errors.Is(err, mpegts.ErrInvalidFrame):
		return apiErrorf(codeInvalidMediaFrame, "A fragment cannot be converted to MPEG-TS: %v.", err)
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
// init segment (EXT-X-MAP) and a discontinuity. It is a SHA-256 digest of what identifies them,
// 32 bytes whatever the tracks hold: keys are cached per fragment (trackKeyOf) and a producer's
// Tracks may carry up to 1 MiB of CodecPrivate.
func trackKey(tracks []mkv.Track) string {
	h := sha256.New()
	for _, t := range tracks {
		fmt.Fprintf(h, "%d/%s/%x/%dx%d/%g/%d;", t.Number, t.CodecID, t.CodecPrivate, t.Width, t.Height, t.SamplingRate, t.Channels)
	}
	return string(h.Sum(nil))
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

// playbackBody answers a playback GET (a playlist, a manifest, an MP4 segment) with body of
// contentType, readable by players on any origin; cacheControl, if set, says how long it may be
// kept: a segment never changes, a live playlist or manifest must not be cached.
func (p *playback) playbackBody(contentType, cacheControl string, body []byte) responder {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("Access-Control-Allow-Origin", "*")
		if cacheControl != "" {
			h.Set("Cache-Control", cacheControl)
		}
		w.WriteHeader(http.StatusOK)
		writeWhole(w, r, body, p.s.media.writeTimeout)
	}
}

// mp4Body answers with an MP4 init or media segment, which never changes.
func (p *playback) mp4Body(body []byte) responder {
	return p.playbackBody("video/mp4", "max-age=86400", body)
}

// cacheControlFor is the Cache-Control of a playlist or manifest: a live one must not be cached.
func cacheControlFor(live bool) string {
	if live {
		return "no-cache"
	}
	return ""
}

// initFragment serves getMP4InitFragment.mp4: the init segment for the tracks of the
// fragment named by FragmentNumber (kvs's playlists and manifests always name one); without it,
// of the newest fragment of the session's list. With TrackNumber (DASH manifests), of that track
// alone. A fragment outside the session (sess.includes) is not found.
func (p *playback) initFragment(ctx context.Context, sess *hlsSession, r *http.Request) (responder, error) {
	var n uint64
	if r.URL.Query().Has("FragmentNumber") {
		var err error
		if n, err = fragmentParam(r); err != nil {
			return nil, err
		}
		meta, err := p.fragmentMeta(ctx, sess.stream, n)
		if err = sess.admit(n, meta, err); err != nil {
			return nil, err
		}
	} else {
		frags, _, _, err := p.list(ctx, sess)
		if err == nil && len(frags) == 0 {
			err = apiErrorf(codeResourceNotFound, "No fragments found for the streaming session.")
		}
		if err != nil {
			return nil, err
		}
		n = frags[len(frags)-1].Number
	}
	tracks, _, err := p.describe(ctx, sess.stream, n)
	if err != nil {
		return nil, err
	}
	track, err := trackParam(r, tracks, n)
	if err != nil {
		return nil, err
	}
	var init []byte
	if track != 0 {
		init, err = fmp4.NewTrackInit(tracks, track)
	} else {
		init, err = fmp4.NewInit(tracks)
	}
	if err != nil {
		return nil, mediaError(err)
	}
	return p.mp4Body(init), nil
}

// trackParam parses the optional TrackNumber query parameter, which must name one of tracks (of
// fragment n); 0 when absent.
func trackParam(r *http.Request, tracks []mkv.Track, n uint64) (uint64, error) {
	q := r.URL.Query()
	if !q.Has("TrackNumber") {
		return 0, nil
	}
	v := q.Get("TrackNumber")
	t, err := strconv.ParseUint(v, 10, 64)
	if err == nil && t > 0 && findTrack(tracks, func(tr *mkv.Track) bool { return tr.Number == t }) != nil {
		return t, nil
	}
	return 0, invalidArgf("TrackNumber %q is not a track of fragment %s.", v, formatFragmentNumber(n))
}

// mediaFragment serves getMP4MediaFragment.mp4: the fragment remuxed on request from its
// stored chunk (live buffer or store) into one moof + mdat (of track TrackNumber alone, if set).
// DASH manifests name the fragment by its producer timestamp (Time, dash.go). Its timeline is the producer
// timestamp since the Unix epoch (90 kHz for video), the same for every session, so segments
// from any request line up. A fragment outside the session (sess.includes) is not found.
func (p *playback) mediaFragment(ctx context.Context, sess *hlsSession, r *http.Request) (responder, error) {
	return p.fragmentSegment(ctx, sess, r, false)
}

// tsFragment serves getTSFragment.ts (sessions of ContainerFormat MPEG_TS): the fragment remuxed
// as mediaFragment does, into an MPEG-2 transport stream segment that carries its own PAT, PMT and
// codec parameters (mkv/mpegts), on the same timeline modulo 2^33. TrackNumber is not read:
// GetTSFragment has all the tracks.
func (p *playback) tsFragment(ctx context.Context, sess *hlsSession, r *http.Request) (responder, error) {
	return p.fragmentSegment(ctx, sess, r, true)
}

// fragmentSegment is mediaFragment, or tsFragment when ts is set.
func (p *playback) fragmentSegment(ctx context.Context, sess *hlsSession, r *http.Request, ts bool) (responder, error) {
	var n uint64
	var origin int64 // DASH: the period's origin, where its decode times count from (dash.go)
	var err error
	if sess.dash && !r.URL.Query().Has("FragmentNumber") {
		n, origin, err = p.fragmentAt(ctx, sess, r)
	} else {
		n, err = fragmentParam(r)
	}
	if err != nil {
		return nil, err
	}
	meta, err := p.fragmentMeta(ctx, sess.stream, n)
	if err = sess.admit(n, meta, err); err != nil {
		return nil, fmt.Errorf("hls media fragment %s: %w", sess.stream, err)
	}
	// Requests for the segment at the same time share it (the viewers of a live stream), and the
	// fragments remuxed at once are bounded (remux.go).
	key := segKey{stream: sess.stream, n: n, track: r.URL.Query().Get("TrackNumber"), origin: origin, ts: ts}
	if ts {
		key.track = ""
	}
	seg, done, err := p.segs.share(ctx, key, func() ([]byte, func(), error) {
		release, err := p.s.media.remux.acquire(ctx, meta.Size)
		if err != nil {
			return nil, nil, err
		}
		made := false
		defer func() { // also when making it panics (segShares.build)
			if !made {
				release()
			}
		}()
		seg, err := p.segment(ctx, sess, r, n, origin, ts)
		if err != nil {
			return nil, nil, err
		}
		made = true
		return seg, release, nil
	})
	if err != nil {
		return nil, err
	}
	body := p.mp4Body(seg)
	if ts {
		body = p.playbackBody("video/mp2t", "max-age=86400", seg)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		defer done()
		p.s.media.sendWithin(w, r, int64(len(seg)), func(r *http.Request) { body(w, r) }) // it holds budget: not for ever
	}, nil
}

// segment makes the media segment of fragment n of the session's stream (mediaFragment), of track
// TrackNumber alone if r sets it, on the timeline that counts from origin (DASH; 0 for HLS); with
// ts, its MPEG-TS segment (tsFragment).
func (p *playback) segment(ctx context.Context, sess *hlsSession, r *http.Request, n uint64, origin int64, ts bool) ([]byte, error) {
	f, meta, err := p.fragment(ctx, sess.stream, n)
	if err = sess.admit(n, meta, err); err != nil {
		return nil, fmt.Errorf("hls media fragment %s: %w", sess.stream, err)
	}
	defer f.Release()
	var track uint64
	if !ts {
		if track, err = trackParam(r, f.Tracks, n); err != nil {
			return nil, err
		}
	}
	at := func(m store.FragmentMeta) time.Duration {
		return time.Duration(m.ProducerTime.UnixNano()) - time.Duration(origin)*time.Millisecond
	}
	// A fragment with B-frames decodes its first samples after those of the fragment right
	// before it on the producer timeline, which it is therefore made with (segmentAfter).
	var prev *mkv.Fragment
	var prevMeta store.FragmentMeta
	if reorders(f) {
		prev, prevMeta = p.fragmentBefore(ctx, sess.stream, meta)
	}
	var seg []byte
	if ts {
		seg, err = mpegts.AppendSegment(nil, f, at(meta), prev, at(prevMeta))
	} else {
		seg, err = fmp4.AppendSegmentAfter(nil, uint32(n), f, track, at(meta), prev, at(prevMeta))
	}
	if err != nil {
		return nil, mediaError(err)
	}
	return seg, nil
}

// fragmentAt returns the number of the fragment of a DASH session's stream, and the Origin its
// decode times count from, whose producer timestamp is nearest Origin + Time (Unix milliseconds; Time is the manifest's $Time$), within
// hlsGapThreshold, among those numbered From (the period's first fragment) or later, the
// lowest-numbered of equals (dash.go).
func (p *playback) fragmentAt(ctx context.Context, sess *hlsSession, r *http.Request) (uint64, int64, error) {
	q := r.URL.Query()
	v := q.Get("Time")
	ms, err := strconv.ParseInt(v, 10, 64)
	if v == "" || err != nil {
		return 0, 0, invalidArgf("FragmentNumber or Time (milliseconds since Origin) is required.")
	}
	// Origin is dashOriginLead before a period's first fragment: negative for a producer whose
	// clock stands within that of the Unix epoch (a camera without NTP or RTC, which boots at
	// 1970-01-01; RELATIVE timecodes with a start timestamp of 0, which restart at 0 with each
	// upload).
	origin, err := strconv.ParseInt(q.Get("Origin"), 10, 64)
	if err != nil || ms < 0 || origin < -math.MaxInt64/2 || origin > math.MaxInt64/2 || ms > math.MaxInt64/2 {
		return 0, 0, invalidArgf("Origin (the producer timestamp Time counts from, in Unix milliseconds) is required.")
	}
	var from uint64
	if v := q.Get("From"); v != "" {
		if from, err = parseFragmentNumber(v); err != nil {
			return 0, 0, fragmentNotFound(v)
		}
	}
	at := time.UnixMilli(origin + ms)
	notFound := func() error {
		return apiErrorf(codeResourceNotFound, "No fragment has the producer timestamp %s.", at.UTC().Format(xsDateTime))
	}
	// A live session's look takes in the fragments around at that liveEdgeWait judges by, in the
	// same answer: judged by a second look, a fragment stored between the two (the one asked for)
	// made the request look past the live edge, and get 404.
	lo, hi := at.Add(-hlsGapThreshold), at.Add(hlsGapThreshold)
	if sess.mode != "ON_DEMAND" {
		maxDur := p.s.media.maxFragmentDuration
		lo, hi = at.Add(-maxDur-hlsGapThreshold), at.Add(maxDur)
	}
	// Subscribed before looking, so that a fragment stored between the look and the wait still
	// wakes the wait (notify.go).
	notices, unsubscribe := p.s.media.notify.subscribe(sess.stream)
	defer unsubscribe()
	var expired <-chan time.Time
	for {
		frags, err := p.inRange(ctx, sess.stream, p.s.media.bufferNamed(sess.stream), store.ProducerTime, lo, hi, 0)
		if err != nil {
			return 0, 0, err
		}
		best := nearestFragment(frags, at, from)
		if best == nil {
			best = successorOfShort(frags, at, from)
		}
		if best != nil {
			if sess.mode == "LIVE_REPLAY" {
				if err := p.awaitReveal(ctx, sess, *best); err != nil {
					return 0, 0, err
				}
			}
			return best.Number, origin, nil
		}
		// Judged again after each notice (a fragment past a gap ends the wait at once); the
		// wait's bound is the first judgement's.
		wait := p.liveEdgeWait(sess, frags, at, from)
		if wait == 0 {
			break
		}
		if expired == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-notices:
		case <-expired:
			return 0, 0, notFound()
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-p.s.media.closing: // Server.Close, as for live GetMedia: a shutdown is not held up
			return 0, 0, errPlaybackShutdown
		}
	}
	return 0, 0, notFound()
}

// segmentWait is how long a DASH media request waits for the segment of a fragment lasting d:
// twice d, 5 s at least, so that a producer's upload time and a busy machine do not turn a wait
// into a 404.
func segmentWait(d time.Duration) time.Duration { return max(2*d, 5*time.Second) }

// errPlaybackShutdown ends a media request's wait when Server.Close begins.
var errPlaybackShutdown = &APIError{Code: codeInternalFailure, Status: http.StatusServiceUnavailable,
	Message: "The server is shutting down; try again."}

// awaitReveal holds a LIVE_REPLAY session's request for the segment of fragment f until the
// session reveals f (replayEdge passes its timestamp), when that is at most segmentWait away; a
// fragment further ahead gets 404. A revealed fragment is served at once.
//
// Why: at the end of a dynamic manifest's timeline ffmpeg (7.1) asks for the next segment at
// once and, until a manifest lists it, again after each answer, with a manifest reload each
// time. In a replay that segment's fragment is stored already, so each ask downloaded it whole,
// many times a second per viewer (TestDASHLiveReplayReveal counted 224-234 asks of one segment
// before this wait). Held until its reveal, it is asked for once.
func (p *playback) awaitReveal(ctx context.Context, sess *hlsSession, f store.FragmentMeta) error {
	// The head is looked up before the token's lock is taken: a manifest build holds it while it
	// walks the whole revealed range, which a media request need not wait for.
	head, err := p.replayHead(ctx, sess, p.s.media.bufferNamed(sess.stream))
	if err != nil {
		return err
	}
	dc := p.tokenState(sess)
	dc.mu.Lock()
	edge := p.replayEdge(sess, head, dc)
	dc.mu.Unlock()
	if edge.IsZero() {
		return nil
	}
	// The reveal's other bound (replayBudget): the media before f in the range.
	var media time.Duration
	err = p.walkRange(ctx, sess.stream, p.s.media.bufferNamed(sess.stream), sess.kind, sess.start, f.Time(sess.kind),
		func(g store.FragmentMeta) bool {
			if g.Number == f.Number {
				return false
			}
			media += g.Duration
			return true
		})
	if err != nil {
		return err
	}
	wait := max(f.Time(sess.kind).Sub(edge), media-p.replayBudget(sess, head))
	if wait <= 0 {
		return nil
	}
	if wait > segmentWait(f.Duration) {
		return apiErrorf(codeResourceNotFound, "Fragment %s is not yet part of the session: the replay reaches it in %v.",
			formatFragmentNumber(f.Number), wait.Round(time.Millisecond))
	}
	select {
	case <-time.After(wait): // collected when unreferenced (Go 1.23)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.s.media.closing:
		return errPlaybackShutdown
	}
}

// nearestFragment returns the fragment of frags numbered from or later whose producer timestamp
// is nearest at, within hlsGapThreshold, the lowest-numbered of equals, or nil. A fragment that
// ends at or before at (its stored duration, 1 ms at least, as a manifest's d) is not at: a
// request for where a fragment shorter than hlsGapThreshold ends (at the live edge, the next
// segment) was served that fragment again, and ffmpeg played its frames twice.
func nearestFragment(frags []store.FragmentMeta, at time.Time, from uint64) *store.FragmentMeta {
	var best *store.FragmentMeta
	for i, f := range frags {
		if f.Number < from || f.ProducerTime.Sub(at).Abs() > hlsGapThreshold ||
			!at.Before(f.ProducerTime.Add(max(f.Duration, time.Millisecond))) {
			continue
		}
		if best != nil {
			d, bd := f.ProducerTime.Sub(at).Abs(), best.ProducerTime.Sub(at).Abs()
			if d > bd || d == bd && f.Number > best.Number {
				continue
			}
		}
		best = &frags[i]
	}
	return best
}

// successorOfShort returns, for a request at the end of a fragment of frags stored shorter than
// a millisecond (a manifest gave it d="1": it had no successor yet, playDuration), the fragment
// of frags numbered from or later that starts next after it on the producer timeline (the
// lowest-numbered of equals), or nil: the segment after it in the manifests that list its
// successor.
func successorOfShort(frags []store.FragmentMeta, at time.Time, from uint64) *store.FragmentMeta {
	var short *store.FragmentMeta
	for i, f := range frags {
		if f.Number >= from && f.Duration < time.Millisecond && f.ProducerTime.Add(time.Millisecond).Equal(at) {
			short = &frags[i]
			break
		}
	}
	if short == nil {
		return nil
	}
	var best *store.FragmentMeta
	for i, f := range frags {
		if f.Number < from || !f.ProducerTime.After(short.ProducerTime) {
			continue
		}
		if best == nil || f.ProducerTime.Before(best.ProducerTime) ||
			f.ProducerTime.Equal(best.ProducerTime) && f.Number < best.Number {
			best = &frags[i]
		}
	}
	return best
}

// liveEdgeWait says how long a DASH media request for time at, which no fragment has yet, waits
// for one, judged by frags (the stream's fragments with producer timestamps from at less
// maxFragmentDuration and hlsGapThreshold to at plus maxFragmentDuration): when at is where the
// newest fragment of a live session's stream ends (the segment after the last one a manifest
// listed), up to segmentWait of that fragment (of the longest a fragment may last, at most);
// otherwise 0, and the request gets 404 at once.
//
// Why: at the end of a dynamic manifest's timeline, ffmpeg (7.1) asks for the next segment at
// once, and again after every 404, with a manifest reload each time (TestDASHLive's front counted
// 5,708 requests while 10 one-second fragments were produced, before this wait). Waiting at the
// live edge, as LL-HLS blocking requests do, turns that into one request per fragment.
// Players that take availability from the manifest's clock (dash.js, Shaka) ask only for listed
// segments and never wait. A request for a time past a gap, or beyond the next fragment, still
// fails at once.
func (p *playback) liveEdgeWait(sess *hlsSession, frags []store.FragmentMeta, at time.Time, from uint64) time.Duration {
	if sess.mode == "ON_DEMAND" {
		return 0
	}
	maxDur := p.s.media.maxFragmentDuration
	var prev *store.FragmentMeta
	for i, f := range frags {
		if f.Number < from {
			continue
		}
		if f.ProducerTime.After(at) {
			return 0 // the stream has gone past at: nothing will come there
		}
		prev = &frags[i]
	}
	if prev == nil || at.Sub(prev.ProducerTime.Add(prev.Duration)).Abs() > hlsGapThreshold {
		return 0
	}
	return min(segmentWait(prev.Duration), segmentWait(maxDur))
}
