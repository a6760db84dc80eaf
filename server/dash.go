package server

// MPEG-DASH playback: GetDASHStreamingSessionURL and the manifest (MPD) its URL leads to
// (kvs-api.md §9). A DASH session is an HLS session (hls.go: the same playback modes, listing,
// signed token, expiry and per-stream limit) whose player reads a manifest instead of playlists.
// Its segments are the fMP4 init and media fragments of hlsmedia.go, one track each (TrackNumber):
// an adaptation set per track is the form every DASH player takes, where video and audio muxed in
// one segment is not (dash.js and Shaka are said not to play it; not tried here).
//
// Choices where KVS documents nothing:
//   - Segments are listed with a SegmentTemplate and a SegmentTimeline of the fragments' producer
//     timestamps in milliseconds since the period's origin (dashOriginLead before its first
//     fragment); a media segment's URL names the fragment by that time ($Time$, with the
//     period's Origin: parameters of getMP4MediaFragment.mp4), the form every DASH player follows
//     live, and its decode times count from the same origin. A segment lasts until the next one
//     starts, where that is less than hlsGapThreshold away from its fragment's end, else as long
//     as its fragment. (The test pattern's fragments were 1-2 ms apart, and GStreamer was seen
//     asking for the times the durations add up to rather than the next t: a 404.) A media
//     request finds the fragment starting nearest its Time within hlsGapThreshold, numbered
//     From (the period's first fragment) or later: periods where timestamps went back may list
//     the same times.
//   - Presentation time is producer time: segments keep their times from one manifest to the
//     next, and a gap in the media (a producer restarted, a fragment lost) is a gap in the
//     SegmentTimeline, which players step over. A new Period starts only at new tracks (a new
//     init segment) or where timestamps go back; ffmpeg plays one Period of a manifest.
//   - An ON_DEMAND manifest (static) starts at its first fragment. A dynamic one (LIVE,
//     LIVE_REPLAY) keeps the availabilityStartTime of its first Period's start on the wall
//     clock, and each Period its id and start (dashTimeline): producer time maps to the wall
//     clock with the session's offset (taken at creation, hlsSession.offset), so that a player's
//     clock finds the live edge, except after timestamps went back, where a Period starts at the
//     end of the one before. A LIVE_REPLAY's manifest turns static once complete, with the
//     periods and times its dynamic ones gave.
//   - Players checked: ffmpeg (static and live), GStreamer's dashdemux (static, and live with
//     a window longer than its presentation delay). GStreamer 1.22's dashdemux plays live 10 s
//     behind the live edge (its presentation-delay property), whatever the manifest's
//     suggestedPresentationDelay; in the default LIVE window of 5 fragments (KVS's
//     MaxManifestFragmentResults default) that place is not listed, and after each update it
//     jumped ahead by whole windows (its position 5 s, 7 s, 15 s, 32 s into a stream of 1 s
//     fragments). With MaxManifestFragmentResults 30 (kvs dash-url --max-fragments 30) it played
//     every segment in turn.
//   - A live session's request for the segment right after the newest fragment (which ffmpeg
//     makes as soon as it reaches the end of the timeline) waits for that fragment rather than
//     getting 404 at once (liveEdgeWait): ffmpeg asked again at once after every 404, with a
//     manifest reload each time (TestDASHLive counts the requests). In a LIVE_REPLAY session
//     the same request, for a fragment stored but not yet revealed, waits for its reveal
//     (awaitReveal): ffmpeg downloaded it whole after every answer until a manifest listed it.
//     A segment further ahead than twice its fragment's duration (5 s at least) gets 404.
//   - kvs:fn (DisplayFragmentNumber ALWAYS) is the fragment number; kvs:ts
//     (DisplayFragmentTimestamp ALWAYS) the fragment's timestamp of the selector's kind in Unix
//     milliseconds. Their namespace is kvsDASHNamespace.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/openkvs/kvs/mkv/fmp4"
	"github.com/openkvs/kvs/server/store"
)

const dashPathPrefix = "/dash/v1/"

// kvsDASHNamespace is the XML namespace of the kvs:fn and kvs:ts attributes.
const kvsDASHNamespace = "urn:kvs:dash:2018"

// dashOriginLead is how far before a period's first fragment its timeline (and its media
// segments' decode times) start: decode times before a keyframe's presentation (B-frames) stay
// positive, and the timeline's numbers stay small, as players are used to.
const dashOriginLead = 10 * time.Second

// dashAudioBandwidth is an audio Representation's bandwidth: a fragment's size is not told apart
// by track, and AAC from cameras is 32-128 kbit/s.
const dashAudioBandwidth = 128_000

var dashNames = sessionNames{"DASHFragmentSelector", "MaxManifestFragmentResults"}

type getDASHRequest struct {
	streamRef
	PlaybackMode               *string           `json:"PlaybackMode"`
	DASHFragmentSelector       *fragmentSelector `json:"DASHFragmentSelector"`
	DisplayFragmentTimestamp   *string           `json:"DisplayFragmentTimestamp"`
	DisplayFragmentNumber      *string           `json:"DisplayFragmentNumber"`
	Expires                    *int64            `json:"Expires"`
	MaxManifestFragmentResults *int64            `json:"MaxManifestFragmentResults"`
}

type dashSessionURL struct {
	DASHStreamingSessionURL string `json:"DASHStreamingSessionURL"`
}

// getDASHStreamingSessionURL implements GetDASHStreamingSessionURL: the checks, defaults and
// limits of GetHLSStreamingSessionURL (MaxManifestFragmentResults is its
// MaxMediaPlaylistFragmentResults), and DisplayFragmentNumber.
func (p *playback) getDASHStreamingSessionURL(ctx context.Context, req *getDASHRequest) (dashSessionURL, error) {
	sess, expires, err := parseHLSRequest(&getHLSRequest{PlaybackMode: req.PlaybackMode,
		HLSFragmentSelector: req.DASHFragmentSelector, DisplayFragmentTimestamp: req.DisplayFragmentTimestamp,
		Expires: req.Expires, MaxMediaPlaylistFragmentResults: req.MaxManifestFragmentResults}, dashNames)
	if err != nil {
		return dashSessionURL{}, err
	}
	sess.dash = true
	if sess.showNumber, err = alwaysMember("DisplayFragmentNumber", req.DisplayFragmentNumber); err != nil {
		return dashSessionURL{}, err
	}
	if err := p.open(ctx, req.streamRef, sess, expires); err != nil {
		return dashSessionURL{}, err
	}
	return dashSessionURL{endpointOf(ctx) + dashPathPrefix + "getDASHManifest.mpd?SessionToken=" + sess.token}, nil
}

// dashPeriod is a run of the listed fragments, frags[from:to], played with one init segment.
type dashPeriod struct {
	from, to int
	id       string
	first    uint64        // the number of the fragment it is named after, where it starts
	start    time.Duration // Period@start
	pto      int64         // presentationTimeOffset, ms
	number   uint64        // dynamic: startNumber, the first listed segment's number (0: none)
}

// dashManifest serves getDASHManifest.mpd: the fragments the session lists now (as HLS's media
// playlist would), as one Period per run of fragments with the same tracks, an AdaptationSet per
// track.
func (p *playback) dashManifest(ctx context.Context, sess *hlsSession, _ *http.Request) (responder, error) {
	frags, seq, ended, keys, err := p.listKeyed(ctx, sess)
	if err != nil {
		return nil, fmt.Errorf("dash manifest %s: %w", sess.stream, err)
	}
	static := sess.mode == "ON_DEMAND" || ended
	ms := func(i int) int64 { return frags[i].ProducerTime.UnixMilli() }
	dur := func(i int) int64 { return max(frags[i].Duration.Milliseconds(), 1) }

	var periods []dashPeriod
	for i := range frags {
		split := i == 0 || keys[i] != keys[i-1] && keys[i] != "" && keys[i-1] != "" ||
			ms(i) <= ms(i-1) || ms(i)-(ms(i-1)+dur(i-1)) < -hlsGapThreshold.Milliseconds()
		if split {
			periods = append(periods, dashPeriod{from: i, to: i + 1})
		} else {
			periods[len(periods)-1].to = i + 1
		}
	}
	// end is where period pd ends on the presentation timeline, ms: its start and its fragments
	// since its presentationTimeOffset.
	end := func(pd dashPeriod) int64 {
		return pd.start.Milliseconds() + ms(pd.to-1) + dur(pd.to-1) - pd.pto
	}
	// An ON_DEMAND manifest's presentation time 0 is its first fragment's producer time; a
	// LIVE or LIVE_REPLAY one's is availabilityStartTime on the wall clock (dashTimeline), kept
	// when a LIVE_REPLAY's manifest turns static at its end: a player that followed the dynamic
	// manifests finds the same periods and times in the last one (re-based at the window's first
	// fragment, with that fragment's period id, ffmpeg asked for its last segment in a loop).
	var ast time.Time
	if sess.mode == "ON_DEMAND" {
		base := ms(0)
		for k := range periods {
			pd := &periods[k]
			first := frags[pd.from]
			pd.id, pd.first, pd.pto = "f"+formatFragmentNumber(first.Number), first.Number, ms(pd.from)
			at := max(pd.pto-base, 0)
			if k > 0 { // where timestamps went back: after the period before
				at = max(at, end(periods[k-1]))
			}
			pd.start = time.Duration(at) * time.Millisecond
		}
	} else {
		ast = p.dashTimeline(sess, frags, keys, periods, end)
		// Segments keep their numbers from one update to the next (startNumber: the numbers of
		// HLS's EXT-X-MEDIA-SEQUENCE, plus one for a replay's, which count from 0), as DASH asks
		// of a dynamic manifest. Without it each update's first segment was number 1 again, and
		// ffmpeg, which keeps its place by number, asked for every live segment twice and
		// started at the window's start rather than at the live edge.
		first := seq + 1
		if sess.mode == "LIVE" {
			if first, _, err = p.discSequence(ctx, sess, frags[0].Number); err != nil {
				return nil, fmt.Errorf("dash manifest %s: %w", sess.stream, err)
			}
		}
		for k := range periods {
			periods[k].number = first + uint64(periods[k].from)
		}
	}
	// From presentation time 0: a static replay's first period may start later.
	total := time.Duration(end(periods[len(periods)-1])) * time.Millisecond

	var b bytes.Buffer
	target := targetDuration(frags, max(sess.target, 1))
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	fmt.Fprintf(&b, `<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:kvs="%s" profiles="urn:mpeg:dash:profile:isoff-live:2011" minBufferTime="PT%dS"`,
		kvsDASHNamespace, target)
	if static {
		fmt.Fprintf(&b, ` type="static" mediaPresentationDuration="%s">`+"\n", xsDuration(total))
	} else {
		var window int64
		for i := range frags {
			window += dur(i)
		}
		fmt.Fprintf(&b, ` type="dynamic" availabilityStartTime="%s" publishTime="%s" minimumUpdatePeriod="PT%dS" timeShiftBufferDepth="%s" suggestedPresentationDelay="%s">`+"\n",
			ast.UTC().Format(xsDateTime), p.s.cfg.Now().UTC().Format(xsDateTime), target,
			xsDuration(time.Duration(window)*time.Millisecond), xsDuration(time.Duration(min(3*int64(target)*1000, window))*time.Millisecond))
	}
	for _, pd := range periods {
		_, m, err := p.describe(ctx, sess.stream, frags[pd.to-1].Number)
		if err != nil {
			return nil, err
		}
		bandwidth := peakBandwidth(frags[pd.from:pd.to])
		fmt.Fprintf(&b, `<Period id="%s" start="%s">`+"\n", pd.id, xsDuration(pd.start))
		for i, t := range m.Tracks {
			p.dashAdaptationSet(&b, sess, i+1, t, bandwidth, frags[pd.from:pd.to], pd)
		}
		b.WriteString("</Period>\n")
	}
	b.WriteString("</MPD>\n")
	return p.playbackBody("application/dash+xml", cacheControlFor(!static), b.Bytes()), nil
}

// dashAdaptationSet writes track t's AdaptationSet (number id) for frags, the fragments of
// period pd.
func (p *playback) dashAdaptationSet(b *bytes.Buffer, sess *hlsSession, id int, t fmp4.MediaTrack, bandwidth int, frags []store.FragmentMeta, pd dashPeriod) {
	pto := pd.pto
	track := strconv.FormatUint(t.Number, 10)
	if t.Video {
		fmt.Fprintf(b, `<AdaptationSet id="%d" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">`+"\n", id)
		fmt.Fprintf(b, `<Representation id="%s" bandwidth="%d" codecs="%s" width="%d" height="%d">`+"\n", track, bandwidth, t.Codecs, t.Width, t.Height)
	} else {
		fmt.Fprintf(b, `<AdaptationSet id="%d" contentType="audio" mimeType="audio/mp4" segmentAlignment="true" startWithSAP="1">`+"\n", id)
		fmt.Fprintf(b, `<Representation id="%s" bandwidth="%d" codecs="%s" audioSamplingRate="%d">`+"\n", track, dashAudioBandwidth, t.Codecs, t.Rate)
		fmt.Fprintf(b, `<AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="%d"/>`+"\n", t.Channels)
	}
	// The period's timeline counts from origin, dashOriginLead before its first fragment. From
	// is the period's first fragment: where timestamps went back, an earlier period may have
	// fragments at the same times, and a media request takes the one of its period.
	origin := pto - dashOriginLead.Milliseconds()
	query := "SessionToken=" + sess.token + "&amp;TrackNumber=" + track
	startNumber := ""
	if pd.number > 0 {
		startNumber = fmt.Sprintf(` startNumber="%d"`, pd.number)
	}
	fmt.Fprintf(b, `<SegmentTemplate timescale="1000"%s presentationTimeOffset="%d" initialization="getMP4InitFragment.mp4?%s&amp;FragmentNumber=%s" media="getMP4MediaFragment.mp4?%s&amp;From=%s&amp;Origin=%d&amp;Time=$Time$">`+"\n",
		startNumber, pto-origin, query, formatFragmentNumber(frags[len(frags)-1].Number), query, formatFragmentNumber(pd.first), origin)
	b.WriteString("<SegmentTimeline>\n")
	for i, f := range frags {
		t := f.ProducerTime.UnixMilli() - origin
		d := max(f.Duration.Milliseconds(), 1)
		if i+1 < len(frags) { // up to the next one, across an overlap or a gap under hlsGapThreshold
			if next := frags[i+1].ProducerTime.UnixMilli() - origin; next-(t+d) <= hlsGapThreshold.Milliseconds() {
				d = max(next-t, 1)
			}
		}
		fmt.Fprintf(b, `<S t="%d" d="%d"`, t, d)
		if sess.showNumber {
			fmt.Fprintf(b, ` kvs:fn="%s"`, formatFragmentNumber(f.Number))
		}
		if sess.showTime {
			fmt.Fprintf(b, ` kvs:ts="%d"`, f.Time(sess.kind).UnixMilli())
		}
		b.WriteString("/>\n")
	}
	b.WriteString("</SegmentTimeline>\n</SegmentTemplate>\n</Representation>\n</AdaptationSet>\n")
}

// dashMark is what a node keeps of a dynamic manifest's Period: the fragment it starts with
// (is named after), that fragment's track key, and its Period@start.
type dashMark struct {
	first store.FragmentMeta
	key   string
	start time.Duration
}

// dashTimeline names and places the periods of a dynamic manifest of frags (keys their track
// keys; end as in dashManifest) and returns its availabilityStartTime. What a node gives a
// period stays from one manifest to the next: the first period is the one the window's first
// fragment belonged to when it was listed before (named after the fragment that period started
// with, which may have slid out), and a period keeps its start; availabilityStartTime is that of
// the session's first manifest on the node. A new period's start is its first fragment's
// producer time on the wall clock (the session's offset), and where timestamps went back the end
// of the period before.
func (p *playback) dashTimeline(sess *hlsSession, frags []store.FragmentMeta, keys []string, periods []dashPeriod,
	end func(dashPeriod) int64) time.Time {
	dc := p.tokenState(sess)
	dc.mu.Lock()
	defer dc.mu.Unlock()
	// before tells whether a is listed before b.
	before := func(a, b store.FragmentMeta) bool {
		if sess.mode == "LIVE" {
			return a.Number < b.Number
		}
		ta, tb := a.Time(sess.kind), b.Time(sess.kind)
		return ta.Before(tb) || ta.Equal(tb) && a.Number < b.Number
	}
	sameKey := func(a, b string) bool { return a == b || a == "" || b == "" } // "": deleted meanwhile
	marks := make([]dashMark, 0, len(periods))
	for k := range periods {
		pd := &periods[k]
		f, key := frags[pd.from], keys[pd.from]
		var mark *dashMark
		for i := len(dc.dashMarks) - 1; i >= 0; i-- {
			m := &dc.dashMarks[i]
			if k > 0 {
				if m.first.Number == f.Number {
					mark = m
					break
				}
				continue
			}
			// Within a period timestamps increase: a period that started later than f
			// (timestamps went back since) is not f's.
			if !before(f, m.first) {
				if sameKey(m.key, key) && !m.first.ProducerTime.After(f.ProducerTime) {
					mark = m
				}
				break
			}
		}
		if mark == nil {
			if dc.dashAST.IsZero() {
				dc.dashAST = f.ProducerTime.Add(sess.offset).Truncate(time.Millisecond)
			}
			at := max(f.ProducerTime.Add(sess.offset).Sub(dc.dashAST).Milliseconds(), 0)
			if k > 0 {
				at = max(at, end(periods[k-1]))
			}
			mark = &dashMark{first: f, key: key, start: time.Duration(at) * time.Millisecond}
		}
		marks = append(marks, *mark)
		pd.id, pd.first, pd.pto = "f"+formatFragmentNumber(mark.first.Number), mark.first.Number, mark.first.ProducerTime.UnixMilli()
		pd.start = mark.start
	}
	dc.dashMarks = marks
	return dc.dashAST
}

const xsDateTime = "2006-01-02T15:04:05.000Z"

// xsDuration formats d as an xs:duration in seconds, e.g. PT12.345S.
func xsDuration(d time.Duration) string {
	return fmt.Sprintf("PT%.3fS", d.Seconds())
}
