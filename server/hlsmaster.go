package server

// The HLS master playlist: one variant whose CODECS, RESOLUTION and BANDWIDTH cover every
// segment its media playlist lists (RFC 8216 §4.3.4.2).

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/openkvs/kvs/mkv/fmp4"
	"github.com/openkvs/kvs/server/store"
)

// masterPlaylist serves getHLSMasterPlaylist.m3u8: one variant whose CODECS, RESOLUTION and
// BANDWIDTH cover every media segment its media playlists list, as far as they are known now
// (RFC 8216 §4.3.4.2; variantFragments): a stream whose picture size changed, or whose audio
// stopped, has segments the newest fragment does not describe, and a player given the newest
// fragment's codecs alone may make no audio SourceBuffer (hls.js) or pick a decoder too small
// for the first segments.
func (p *playback) masterPlaylist(ctx context.Context, sess *hlsSession, _ *http.Request) (responder, error) {
	frags, _, _, err := p.list(ctx, sess)
	if err != nil {
		return nil, fmt.Errorf("hls master playlist %s: %w", sess.stream, err)
	}
	if len(frags) == 0 {
		return nil, apiErrorf(codeResourceNotFound, "No fragments found for the streaming session.")
	}
	// The newest fragment's tracks are checked as before: the session plays them.
	_, m, err := p.describe(ctx, sess.stream, frags[len(frags)-1].Number)
	if err != nil {
		return nil, err
	}
	all, err := p.variantFragments(ctx, sess, frags)
	if err != nil {
		return nil, fmt.Errorf("hls master playlist %s: %w", sess.stream, err)
	}
	var codecs []string
	width, height := 0, 0
	add := func(m fmp4.Media) {
		for _, c := range m.Codecs {
			if !slices.Contains(codecs, c) {
				codecs = append(codecs, c)
			}
		}
		if m.Width*m.Height > width*height { // the largest picture: what to display all of them at
			width, height = m.Width, m.Height
		}
	}
	seen := map[string]bool{}
	for _, f := range all {
		k, err := p.trackKeyOf(ctx, sess, f.Number)
		if err != nil {
			return nil, fmt.Errorf("hls master playlist %s: %w", sess.stream, err)
		}
		if k == "" || seen[k] { // gone meanwhile, or tracks already described
			continue
		}
		seen[k] = true
		if _, fm, err := p.describe(ctx, sess.stream, f.Number); err == nil {
			add(fm) // one that cannot be described fails alone when its segments are fetched
		}
	}
	add(m)
	bandwidth := peakBandwidth(all)
	var b bytes.Buffer
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-INDEPENDENT-SEGMENTS\n", sess.playlistVersion())
	fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,CODECS=\"%s\",RESOLUTION=%dx%d\n",
		bandwidth, strings.Join(codecs, ","), width, height)
	fmt.Fprintf(&b, "getHLSMediaPlaylist.m3u8?SessionToken=%s\n", sess.token)
	return p.playlistBody(b.Bytes(), false), nil
}

// variantFragments returns the fragments a master playlist describes, given frags, the media
// playlist's window now: for ON_DEMAND that is all its playlists ever list, for LIVE all that
// is known of them (later fragments may bring other tracks: a player meets them at an
// EXT-X-DISCONTINUITY with a new EXT-X-MAP). A LIVE_REPLAY window slides through the session's
// range: the range's fragments stored now, its first hlsMaxFragments at most (each one's
// tracks are read once, then cached, as the window's sequence numbers need anyway).
func (p *playback) variantFragments(ctx context.Context, sess *hlsSession, frags []store.FragmentMeta) ([]store.FragmentMeta, error) {
	if sess.mode != "LIVE_REPLAY" {
		return frags, nil
	}
	all, err := p.inRange(ctx, sess.stream, p.s.media.bufferNamed(sess.stream), sess.kind, sess.start, sess.replayEnd(), hlsMaxFragments)
	if err != nil {
		return nil, err
	}
	return append(all, frags...), nil
}

// peakBandwidth is the peak bit rate of frags, for a player to choose by (BANDWIDTH, bandwidth).
func peakBandwidth(frags []store.FragmentMeta) int {
	bandwidth := 0
	for _, f := range frags {
		if f.Duration > 0 {
			bandwidth = max(bandwidth, int(float64(f.Size*8)/f.Duration.Seconds()))
		}
	}
	if bandwidth == 0 {
		bandwidth = hlsDefaultBandwidth
	}
	return bandwidth
}
