package server

// HLS playlists: which fragments a session lists (live window or time range), and the master and
// media playlists built from them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// list returns the fragments the session's media playlist shows now, in playlist order, the
// media sequence number of the first, and whether the playlist is complete (EXT-X-ENDLIST).
//
//   - LIVE: the newest max fragments by number (ingestion order); seq is the first one's
//     fragment number here, and the media playlist replaces it with the position count of
//     discSequence (the session's first fragment number plus the fragments stored after it), so
//     that it grows by exactly one per fragment that slides out even where numbers skip (a
//     number reserved but never stored, after an upload failed inside a fragment).
//   - LIVE_REPLAY: the fragments from the start timestamp on (to the end timestamp, if set), in
//     timestamp order, revealed at the pace of real time as KVS does: the first max at once,
//     then each one when the session has run as long as the media before it; the window shows
//     the newest max of those revealed. Complete once an end timestamp is set, every fragment up
//     to it is revealed, and the stream has a fragment past it.
//   - ON_DEMAND: the first max fragments of the range in timestamp order; always complete.
//
// Each fragment's Duration is its playDuration.
func (p *playback) list(ctx context.Context, sess *hlsSession) (frags []store.FragmentMeta, seq uint64, ended bool, err error) {
	frags, seq, ended, err = p.listStored(ctx, sess)
	if err == nil {
		err = p.playDurations(ctx, sess.stream, frags)
	}
	if err != nil {
		return nil, 0, false, err
	}
	return frags, seq, ended, nil
}

// listStored is list with the fragments' stored durations.
func (p *playback) listStored(ctx context.Context, sess *hlsSession) (frags []store.FragmentMeta, seq uint64, ended bool, err error) {
	// The session knows only the stream's name: its buffer keeps the limits the stream's
	// retention gave it (bufferNamed), which may be 0 by now.
	buf := p.s.media.bufferNamed(sess.stream)
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
	end := sess.replayEnd()
	head, err := p.replayHead(ctx, sess, buf)
	if err != nil {
		return nil, 0, false, err
	}
	// The revealed fragments are walked page by page, keeping the newest max in a ring: memory
	// stays the window's, however long the range (the walk itself is as long as the revealed
	// part).
	dc := p.tokenState(sess)
	dc.mu.Lock()
	defer dc.mu.Unlock()
	edge := p.replayEdge(sess, head, dc)
	if edge.IsZero() {
		return nil, 0, false, nil
	}
	ring := make([]store.FragmentMeta, sess.max)
	shown := 0
	budget, media, held := p.replayBudget(sess, head), time.Duration(0), false
	err = p.walkRange(ctx, sess.stream, buf, sess.kind, sess.start, edge, func(f store.FragmentMeta) bool {
		if media > budget { // the session has not yet run as long as the media before f
			held = true
			return false
		}
		media += f.Duration
		ring[shown%sess.max] = f
		shown++
		return true
	})
	if err != nil {
		return nil, 0, false, err
	}
	from := max(0, shown-sess.max)
	frags = make([]store.FragmentMeta, 0, shown-from)
	for i := from; i < shown; i++ {
		frags = append(frags, ring[i%sess.max])
	}
	// A segment keeps its number (RFC 8216 §6.2.1) when the range loses its first fragments
	// to retention: the position of the last window's first fragment, if still listed, fixes
	// the offset.
	for k, f := range frags {
		if dc.lastFirst != 0 && f.Number == dc.lastFirst {
			dc.seqOff = int64(dc.lastSeq) - int64(from+k)
			break
		}
	}
	seq = uint64(max(int64(from)+dc.seqOff, 0))
	if len(frags) > 0 {
		dc.lastFirst, dc.lastSeq = frags[0].Number, seq
	}
	revealedAll := !held && !edge.Before(end)
	if !sess.end.IsZero() && !held && !revealedAll {
		rest, err := p.inRange(ctx, sess.stream, buf, sess.kind, edge.Add(time.Nanosecond), end, 1)
		if err != nil {
			return nil, 0, false, err
		}
		revealedAll = len(rest) == 0
	}
	if !sess.end.IsZero() && revealedAll {
		after, err := p.inRange(ctx, sess.stream, buf, sess.kind, sess.end.Add(time.Nanosecond), farFuture, 1)
		if err != nil {
			return nil, 0, false, err
		}
		// On the server clock nothing can join a range that ended before now (less the longest
		// a fragment takes to arrive).
		ended = len(after) > 0 || (sess.kind == store.ServerTime &&
			p.s.cfg.Now().After(sess.end.Add(p.s.media.maxFragmentDuration+hlsLiveRecency)))
	}
	return frags, seq, ended, nil
}

// replayEnd is the end of a LIVE_REPLAY session's range: its end timestamp, or the far future.
func (sess *hlsSession) replayEnd() time.Time {
	if sess.end.IsZero() {
		return farFuture
	}
	return sess.end
}

// replayBudget is how much media a LIVE_REPLAY session has revealed, counted in its fragments'
// durations: the media of head, its first max fragments, before the last of them (revealed at
// once) plus the time since the session's creation. A fragment is revealed when the media before
// it in the range is within the budget, and its timestamp within replayEdge. Paced by timestamps
// alone, fragments that arrived faster than real time (a producer uploading its backlog after an
// outage, a recording uploaded with its own timestamps) were revealed all at once on the server
// clock: a player, which starts at a live playlist's end, skipped all but the last few.
func (p *playback) replayBudget(sess *hlsSession, head []store.FragmentMeta) time.Duration {
	budget := p.s.cfg.Now().Sub(sess.created)
	for _, f := range head[:max(len(head)-1, 0)] {
		budget += f.Duration
	}
	return budget
}

// replayHead returns a LIVE_REPLAY session's first max fragments, which replayEdge and
// replayBudget place the reveal by.
func (p *playback) replayHead(ctx context.Context, sess *hlsSession, buf *streamBuffer) ([]store.FragmentMeta, error) {
	return p.inRange(ctx, sess.stream, buf, sess.kind, sess.start, sess.replayEnd(), sess.max)
}

// replayEdge returns how far a LIVE_REPLAY session has revealed its range (the fragments whose
// timestamp of the session's kind is not after it): the range's first fragment plus the time
// since the session's creation plus the span of head, its first max fragments (replayHead: those
// are revealed at once), at most the range's end; zero while the range has no fragment. The
// caller holds dc.mu (dc.origin: the first fragment's time when first listed, kept when the range
// loses it).
func (p *playback) replayEdge(sess *hlsSession, head []store.FragmentMeta, dc *sessionState) time.Time {
	if len(head) == 0 {
		return time.Time{}
	}
	first := head[0].Time(sess.kind)
	if dc.origin.IsZero() || first.Before(dc.origin) {
		dc.origin = first
	}
	edge := dc.origin.Add(p.s.cfg.Now().Sub(sess.created) + head[len(head)-1].Time(sess.kind).Sub(first))
	if end := sess.replayEnd(); edge.After(end) {
		edge = end
	}
	return edge
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
	frags = buf.addBuffered(frags, func(f store.FragmentMeta) bool { return f.Number >= from }, p.s.firstStored(ctx, name))
	sort.Slice(frags, func(i, j int) bool { return frags[i].Number < frags[j].Number })
	return frags[max(0, len(frags)-n):], nil
}

// inRange returns the fragments whose kind timestamp is in [start, end], in (timestamp, number)
// order, at most limit of them (0: all).
func (p *playback) inRange(ctx context.Context, name string, buf *streamBuffer, kind store.TimeKind, start, end time.Time, limit int) ([]store.FragmentMeta, error) {
	var out []store.FragmentMeta
	err := p.walkRange(ctx, name, buf, kind, start, end, func(f store.FragmentMeta) bool {
		out = append(out, f)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// walkRange calls fn with each fragment whose kind timestamp is in [start, end], in (timestamp,
// number) order, until fn returns false, paging through the store like ListFragments.
func (p *playback) walkRange(ctx context.Context, name string, buf *streamBuffer, kind store.TimeKind, start, end time.Time,
	fn func(store.FragmentMeta) bool) error {
	q := listQuery{Kind: "S", Start: clampNanos(start), End: clampNanos(end), Number: ^uint64(0)}
	if kind == store.ProducerTime {
		q.Kind = "P"
	}
	q.After = q.Start - 1
	const page = maxListFragments
	for {
		got, err := p.s.media.listPage(ctx, name, buf, q, page)
		if err != nil {
			return err
		}
		n := min(len(got), page)
		for _, f := range got[:n] {
			if !fn(f) {
				return nil
			}
		}
		if len(got) <= page {
			return nil
		}
		last := got[n-1]
		q.After, q.Number = q.time(last), last.Number
	}
}

// listKeyed is list with the track key of each fragment listed; no fragment is
// ResourceNotFoundException.
func (p *playback) listKeyed(ctx context.Context, sess *hlsSession) (frags []store.FragmentMeta, seq uint64, ended bool, keys []string, err error) {
	frags, seq, ended, err = p.list(ctx, sess)
	if err == nil && len(frags) == 0 {
		err = apiErrorf(codeResourceNotFound, "No fragments found for the streaming session.")
	}
	if err == nil {
		keys, err = p.keys(ctx, sess, frags)
	}
	return frags, seq, ended, keys, err
}

// keys returns the track keys of frags.
func (p *playback) keys(ctx context.Context, sess *hlsSession, frags []store.FragmentMeta) ([]string, error) {
	out := make([]string, len(frags))
	for i, f := range frags {
		k, err := p.trackKeyOf(ctx, sess, f.Number)
		if err != nil {
			return nil, err
		}
		out[i] = k
	}
	return out, nil
}

// trackKeyOf returns the track key of fragment n of the session's stream, "" when it is gone.
// Keys are cached per node: a fragment's tracks never change.
func (p *playback) trackKeyOf(ctx context.Context, sess *hlsSession, n uint64) (string, error) {
	fk := fragmentKey{sess.arn, n}
	p.mu.Lock()
	k, ok := p.trackKeys[fk]
	p.mu.Unlock()
	if ok {
		return k, nil
	}
	tracks, err := p.tracks(ctx, sess.stream, n)
	switch {
	case errors.Is(err, store.ErrFragmentNotFound):
		return "", nil // expired between listing and reading: it will fail when fetched
	case err != nil:
		return "", err
	}
	k = trackKey(tracks)
	p.mu.Lock()
	if len(p.trackKeys) >= hlsKeyCacheSize {
		clear(p.trackKeys)
	}
	p.trackKeys[fk] = k
	p.mu.Unlock()
	return k, nil
}

// targetDuration is EXT-X-TARGETDURATION for frags: the longest one in whole seconds, rounded
// up, and at least floor.
func targetDuration(frags []store.FragmentMeta, floor int) int {
	target := floor
	for _, f := range frags {
		target = max(target, int(math.Ceil(f.Duration.Seconds())))
	}
	return target
}

// discontinuity reports whether a playlist of the session puts an EXT-X-DISCONTINUITY between
// consecutive fragments prev and cur (with track keys prevKey and curKey): where the tracks
// change, always with DiscontinuityMode ALWAYS, and with ON_DISCONTINUITY where their producer
// timestamps leave a gap or an overlap of more than hlsGapThreshold.
func (sess *hlsSession) discontinuity(prev, cur store.FragmentMeta, prevKey, curKey string) bool {
	switch {
	case curKey != prevKey && curKey != "" && prevKey != "":
		return true
	case sess.disc == "ALWAYS":
		return true
	case sess.disc == "ON_DISCONTINUITY":
		gap := cur.ProducerTime.Sub(prev.ProducerTime.Add(prev.Duration))
		return gap > hlsGapThreshold || gap < -hlsGapThreshold
	}
	return false
}

// tokenState returns what this node keeps for the session's token, creating it. A session being
// created has no token yet: it gets a state of its own, kept nowhere (one kept under "" was
// shared by every session's creation, and a LIVE_REPLAY's reveal origin from one range held
// back the next session's over a later range: no fragments, ResourceNotFoundException).
func (p *playback) tokenState(sess *hlsSession) *sessionState {
	if sess.token == "" {
		return &sessionState{expires: sess.expires}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dc := p.states[sess.token]
	if dc == nil {
		if len(p.states) >= hlsStateCacheSize {
			now := p.s.cfg.Now()
			for t, d := range p.states {
				if !now.Before(d.expires) {
					delete(p.states, t)
				}
			}
			if len(p.states) >= hlsStateCacheSize {
				clear(p.states)
			}
		}
		dc = &sessionState{expires: sess.expires}
		p.states[sess.token] = dc
	}
	return dc
}

// sessionState is what a node keeps per session token. For LIVE: the count of the discontinuities
// between the session's first fragment and fragment through (inclusive), as the node has counted
// them so far. For LIVE_REPLAY: the reveal's origin and the last window's first fragment and
// media sequence number, so that retention deleting the range's first fragments moves neither
// the pace nor the numbers of the segments still listed.
type sessionState struct {
	mu      sync.Mutex
	through uint64
	last    store.FragmentMeta // fragment through, for the next boundary
	lastKey string
	count   int
	index   uint64 // fragments walked before through (through's position since the session's first)
	expires time.Time

	origin    time.Time // LIVE_REPLAY: the time of the range's first fragment when first listed
	lastFirst uint64    // LIVE_REPLAY: the last window's first fragment (0: none yet)
	lastSeq   uint64    // its media sequence number
	seqOff    int64     // what the position in the listing is off from the sequence number

	// LIVE_REPLAY, HLS: the discontinuities counted up to fragment replayThrough (keyed
	// replayKey) of the range, in the replay's order (replayDiscSequence).
	replayCounted bool
	replayThrough store.FragmentMeta
	replayKey     string
	replayDisc    int

	dashAST   time.Time  // DASH, dynamic: the availabilityStartTime this node gives the session (dashTimeline)
	dashMarks []dashMark // the periods of its last manifest
}

// discSequence returns EXT-X-MEDIA-SEQUENCE and EXT-X-DISCONTINUITY-SEQUENCE for a LIVE window
// starting at fragment first: the session's first fragment number plus the fragments stored
// between it and first (RFC 8216 §6.2.1: a segment keeps its number), and the discontinuities up
// to first, which slid out of the window or, for the boundary into first, whose tag the window
// no longer shows (§6.2.2). It is derived from the store, so every node gives the same answer for a token; a
// node counts once and then only the fragments that slid out since (cached per token).
func (p *playback) discSequence(ctx context.Context, sess *hlsSession, first uint64) (uint64, int, error) {
	dc := p.tokenState(sess)
	dc.mu.Lock()
	defer dc.mu.Unlock()
	// Walk up to and including first: the marker before the window's first segment is not
	// written, so the sequence counts it (RFC 8216 §6.2.2).
	from := max(dc.through+1, sess.first)
	for from <= first {
		page, err := p.s.store.Range(ctx, sess.stream, from, maxListFragments)
		if err != nil {
			return 0, 0, err
		}
		for _, f := range page {
			if f.Number > first {
				break
			}
			k, err := p.trackKeyOf(ctx, sess, f.Number)
			if err != nil {
				return 0, 0, err
			}
			if dc.through != 0 {
				// As the window shows it (list): with its playDuration, now that a fragment
				// after it is stored.
				prev := dc.last
				if prev.Duration, err = p.playDuration(ctx, sess.stream, prev); err != nil {
					return 0, 0, err
				}
				if sess.discontinuity(prev, f, dc.lastKey, k) {
					dc.count++
				}
				dc.index++
			}
			dc.through, dc.last, dc.lastKey = f.Number, f, k
		}
		if len(page) < maxListFragments || page[len(page)-1].Number >= first {
			break
		}
		from = page[len(page)-1].Number + 1
	}
	if dc.through == 0 { // nothing stored yet: the window's first number
		return first, dc.count, nil
	}
	if dc.through != first { // first is not in the store (yet): count from the last walked
		return sess.first + dc.index + (first - dc.through), dc.count, nil
	}
	return sess.first + dc.index, dc.count, nil
}

// replayDiscSequence returns EXT-X-DISCONTINUITY-SEQUENCE for a LIVE_REPLAY window starting at
// fragment first: the discontinuities between the range's fragments (in timestamp order) up to
// first, the marker before first included, as discSequence counts them for LIVE. A node counts
// once, then only the fragments the window passed since (cached per token, with the LIVE_REPLAY
// reveal's state); a node that takes the session over after retention deleted fragments of the
// range counts from those left, as its media sequence numbers do.
func (p *playback) replayDiscSequence(ctx context.Context, sess *hlsSession, first store.FragmentMeta) (int, error) {
	dc := p.tokenState(sess)
	dc.mu.Lock()
	defer dc.mu.Unlock()
	// after tells whether a comes after b in the replay's order.
	after := func(a, b store.FragmentMeta) bool {
		ta, tb := a.Time(sess.kind), b.Time(sess.kind)
		return ta.After(tb) || ta.Equal(tb) && a.Number > b.Number
	}
	if dc.replayCounted && !after(first, dc.replayThrough) {
		return dc.replayDisc, nil
	}
	start := sess.start
	if dc.replayCounted {
		start = dc.replayThrough.Time(sess.kind)
	}
	var kerr error
	err := p.walkRange(ctx, sess.stream, p.s.media.bufferNamed(sess.stream), sess.kind, start, first.Time(sess.kind),
		func(f store.FragmentMeta) bool {
			if dc.replayCounted && !after(f, dc.replayThrough) {
				return true
			}
			if after(f, first) {
				return false
			}
			k, err := p.trackKeyOf(ctx, sess, f.Number)
			if err != nil {
				kerr = err
				return false
			}
			if dc.replayCounted {
				prev := dc.replayThrough // with its playDuration, as the window shows it (list)
				if prev.Duration, kerr = p.playDuration(ctx, sess.stream, prev); kerr != nil {
					return false
				}
				if sess.discontinuity(prev, f, dc.replayKey, k) {
					dc.replayDisc++
				}
			}
			dc.replayThrough, dc.replayKey, dc.replayCounted = f, k, true
			return true
		})
	if err == nil {
		err = kerr
	}
	return dc.replayDisc, err
}

// playlistBody answers with a playlist (live: one not to be cached).
func (p *playback) playlistBody(body []byte, live bool) responder {
	return p.playbackBody("application/vnd.apple.mpegurl", cacheControlFor(live), body)
}

// playlistVersion is the EXT-X-VERSION of the session's playlists: 7 for fMP4 (EXT-X-MAP without
// I-frame playlists needs 6), 3 for MPEG-TS (decimal EXTINF is the newest feature those use), so
// that the older players MPEG-TS is for, which refuse a version they do not know (RFC 8216 §7),
// play them.
func (sess *hlsSession) playlistVersion() int {
	if sess.ts {
		return 3
	}
	return 7
}

// mediaPlaylist serves getHLSMediaPlaylist.m3u8 (see list for what each mode shows).
// Segments are fragments, EXTINF their FragmentLengthInMilliseconds. EXT-X-MAP names the init
// segment of the first fragment and is repeated, after an EXT-X-DISCONTINUITY, wherever the
// tracks change; an MPEG_TS session has none (each getTSFragment.ts carries its own PAT, PMT
// and codec parameters). DiscontinuityMode ON_DISCONTINUITY marks gaps and overlaps of more than
// hlsGapThreshold between consecutive fragments' producer timestamps. EXT-X-DISCONTINUITY-SEQUENCE
// counts the markers that slid out of a LIVE or LIVE_REPLAY window.
func (p *playback) mediaPlaylist(ctx context.Context, sess *hlsSession, _ *http.Request) (responder, error) {
	frags, seq, ended, keys, err := p.listKeyed(ctx, sess)
	if err != nil {
		return nil, fmt.Errorf("hls media playlist %s: %w", sess.stream, err)
	}

	// The target never goes below the first playlist's (carried in the token); it grows when a
	// longer fragment comes.
	target := targetDuration(frags, max(sess.target, 1))
	disc := make([]bool, len(frags))
	for i := 1; i < len(frags); i++ {
		disc[i] = sess.discontinuity(frags[i-1], frags[i], keys[i-1], keys[i])
	}
	// Markers that slid out of the window are counted for LIVE and LIVE_REPLAY; an ON_DEMAND
	// window never slides.
	var discSeq int
	switch sess.mode {
	case "LIVE":
		seq, discSeq, err = p.discSequence(ctx, sess, frags[0].Number)
	case "LIVE_REPLAY":
		discSeq, err = p.replayDiscSequence(ctx, sess, frags[0])
	}
	if err != nil {
		return nil, fmt.Errorf("hls media playlist %s: %w", sess.stream, err)
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:%d\n", sess.playlistVersion())
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
		if !sess.ts && (i == 0 || keys[i] != keys[i-1]) {
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken=%s&FragmentNumber=%s\"\n",
				sess.token, formatFragmentNumber(f.Number))
		}
		if sess.showTime {
			fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", f.Time(sess.kind).UTC().Format(xsDateTime))
		}
		segment := "getMP4MediaFragment.mp4"
		if sess.ts {
			segment = "getTSFragment.ts"
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s?SessionToken=%s&FragmentNumber=%s\n",
			f.Duration.Seconds(), segment, sess.token, formatFragmentNumber(f.Number))
	}
	if ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return p.playlistBody(b.Bytes(), !ended), nil
}
