package server

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// playlistSegments maps each fragment number of a media playlist to its media sequence number
// and discontinuity sequence number (RFC 8216 §6.2.1: MSN of the first segment is
// EXT-X-MEDIA-SEQUENCE, +1 per segment; its discontinuity sequence is
// EXT-X-DISCONTINUITY-SEQUENCE, +1 per EXT-X-DISCONTINUITY before it).
func playlistSegments(t *testing.T, media string) map[string][2]int {
	t.Helper()
	msn, dsn := 0, 0
	out := map[string][2]int{}
	fn := regexp.MustCompile(`^getMP4MediaFragment\.mp4\?.*FragmentNumber=(\d+)$`)
	for _, line := range strings.Split(media, "\n") {
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			msn, _ = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"))
		case strings.HasPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"):
			dsn, _ = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"))
		case line == "#EXT-X-DISCONTINUITY":
			dsn++
		default:
			if m := fn.FindStringSubmatch(line); m != nil {
				out[m[1]] = [2]int{msn, dsn}
				msn++
			}
		}
	}
	return out
}

// liveSession stores clip fragments 0 and 1 of h264.mkv on a new stream through an upload that
// stays open, and starts a LIVE HLS session of max fragments on it: the server, the clip, the
// upload and the session's URL.
func liveSession(t *testing.T, max int) (*mediaEnv, *clip, *putConn, string) {
	t.Helper()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	for _, i := range []int{0, 1} {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "MaxMediaPlaylistFragmentResults": max})
	if code != "" {
		t.Fatal(code)
	}
	return e, c, pc, url
}

// TestHLSLiveDiscontinuitySequenceStable: a segment keeps its discontinuity sequence number
// across refreshes of a LIVE playlist. When the segment after a discontinuity becomes the first
// of the window, its EXT-X-DISCONTINUITY tag is dropped, so EXT-X-DISCONTINUITY-SEQUENCE must
// count it (RFC 8216 §6.2.2).
func TestHLSLiveDiscontinuitySequenceStable(t *testing.T) {
	t.Parallel()
	_, c, pc, url := liveSession(t, 2)
	// Clip fragment 2 left out: a gap in producer time before fragment number 3.
	pc.fragment(c.cluster(t, 3, baseMillis), c.fragTimecode(3, baseMillis), true)
	_, before := mediaPlaylist(t, url) // [2, DISCONTINUITY, 3]
	pc.fragment(c.cluster(t, 4, baseMillis), c.fragTimecode(4, baseMillis), true)
	_, after := mediaPlaylist(t, url) // [3, 4]
	a, b := playlistSegments(t, before), playlistSegments(t, after)
	for fn, sb := range b {
		if sa, ok := a[fn]; ok && sa != sb {
			t.Errorf("fragment ...%s: (media sequence, discontinuity sequence) %v, then %v once it is first in the window", fn[len(fn)-3:], sa, sb)
		}
	}
}

// TestHLSLiveMediaSequenceStable: a segment keeps its media sequence number across refreshes of
// a LIVE playlist (RFC 8216 §6.2.1) when a fragment number was reserved but never stored: the
// producer's connection dropped in the middle of a fragment and it reconnected.
func TestHLSLiveMediaSequenceStable(t *testing.T) {
	t.Parallel()
	e, c, pc, url := liveSession(t, 3)
	// Half of fragment 2, then the connection drops: number 3 is reserved (BUFFERING) but never stored.
	cl := c.cluster(t, 2, baseMillis)
	pc.write(cl[:len(cl)/2])
	pc.expect(ackBuffering, 3)
	pc.pw.CloseWithError(errors.New("network down"))
	for range pc.acks {
	}
	// The producer reconnects and goes on.
	pc = e.startPut(t, "cam")
	pc.write(c.header())
	var prev map[string][2]int
	for _, i := range []int{2, 3, 4, 5} {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
		_, media := mediaPlaylist(t, url)
		cur := playlistSegments(t, media)
		for fn, s := range cur {
			if p, ok := prev[fn]; ok && p[0] != s[0] {
				t.Errorf("fragment ...%s: media sequence number %d, then %d in the next playlist", fn[len(fn)-3:], p[0], s[0])
			}
		}
		prev = cur
	}
}

// setClock is a clock the test sets.
type setClock struct{ ns atomic.Int64 }

func (c *setClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *setClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *setClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// TestHLSLiveReplayRangeOver24h: HLSTimestampRange.EndTimestamp "must be within 24 hours of the
// specified StartTimestamp" for LIVE_REPLAY as for ON_DEMAND (API_reader_HLSTimestampRange):
// InvalidArgumentException.
func TestHLSLiveReplayRangeOver24h(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(4)...)
	for _, mode := range []string{"ON_DEMAND", "LIVE_REPLAY"} {
		_, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": mode,
			"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
				"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 86400 + 1}}})
		if code != "InvalidArgumentException" {
			t.Errorf("%s over 24 h 1 s: %q, want InvalidArgumentException", mode, code)
		}
	}
}

// clockedStream starts a server on a set clock, at t0, with a stream "cam": the server, its clock
// and t0.
func clockedStream(t *testing.T) (*mediaEnv, *setClock, time.Time) {
	t.Helper()
	clock := &setClock{}
	t0 := time.Unix(1_800_000_000, 0)
	clock.Set(t0)
	e := newMediaEnv(t, "mem", func(c *Config) { c.Now = clock.Now })
	e.createStream(t, "cam", 24)
	return e, clock, t0
}

// recorded stores n 1 s fragments of h264.mkv on a new stream "cam" of a server on a set clock,
// the fragment i at server time t0 + i s (producer times from baseMillis), and ends the upload: the
// server, its clock and t0.
func recorded(t *testing.T, n int) (*mediaEnv, *setClock, time.Time) {
	t.Helper()
	e, clock, t0 := clockedStream(t)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	for i := range n {
		clock.Set(t0.Add(time.Duration(i) * time.Second))
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	return e, clock, t0
}

// TestHLSLiveReplayEndsAtPastEnd: a LIVE_REPLAY session over a finished recording, on the server
// clock, with an EndTimestamp in the past (as KVS requires for SERVER_TIMESTAMP): no fragment can
// ever join the range, so once every fragment is revealed the playlist is complete and must carry
// EXT-X-ENDLIST, or players poll it until the session expires.
func TestHLSLiveReplayEndsAtPastEnd(t *testing.T) {
	t.Parallel()
	e, clock, t0 := recorded(t, 4) // then the camera stops
	clock.Set(t0.Add(20 * time.Second))
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxMediaPlaylistFragmentResults": 2,
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": t0.Unix() - 1, "EndTimestamp": t0.Unix() + 10}}})
	if code != "" {
		t.Fatal(code)
	}
	clock.Add(time.Minute) // far past the time it takes to reveal 4 s of media
	_, media := mediaPlaylist(t, url)
	if n := strings.Count(media, "#EXTINF:"); n != 2 || !strings.Contains(media, "FragmentNumber="+formatFragmentNumber(4)) {
		t.Fatalf("want the last 2 fragments revealed:\n%s", media)
	}
	if !strings.Contains(media, "#EXT-X-ENDLIST") {
		t.Errorf("every fragment of the range is listed, the range ended 70 s ago, and no EXT-X-ENDLIST")
	}
}

// TestHLSLiveReplayPace: a LIVE_REPLAY session reveals the first MaxMediaPlaylistFragmentResults
// fragments at once, then each one once the session has run as long as the media before it; the
// window shows the newest of those revealed, with the media sequence number of its place in the
// range, and an EndTimestamp ends the playlist once everything up to it is revealed and the
// stream has gone past it.
func TestHLSLiveReplayPace(t *testing.T) {
	t.Parallel()
	e, clock, t0 := clockedStream(t)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	var numbers []uint64
	for i := range 4 { // four 1 s fragments, producer times baseMillis + 0, 1, 2, 3 s
		numbers = append(numbers, pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true))
	}
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxMediaPlaylistFragmentResults": 2,
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3}}})
	if code != "" {
		t.Fatal(code)
	}
	for _, step := range []struct {
		elapsed time.Duration
		first   int // index in numbers of the window's first fragment; the window holds two
		ended   bool
	}{
		{0, 0, false},                       // the first two at once
		{time.Second, 1, false},             // one more after 1 s
		{1500 * time.Millisecond, 1, false}, // not the next before 2 s
		{2 * time.Second, 2, false},         // all four revealed, but the stream has nothing past the end yet
	} {
		clock.Set(t0.Add(step.elapsed))
		_, media := mediaPlaylist(t, url)
		segs := playlistSegments(t, media)
		for k, i := range []int{step.first, step.first + 1} {
			s, ok := segs[formatFragmentNumber(numbers[i])]
			if !ok || s[0] != step.first+k || len(segs) != 2 || strings.Contains(media, "#EXT-X-ENDLIST") != step.ended {
				t.Fatalf("after %v: want fragments %d and %d with media sequence numbers %d and %d, ended %v:\n%s",
					step.elapsed, i, i+1, step.first, step.first+1, step.ended, media)
			}
		}
	}
	pc.fragment(c.cluster(t, 3, baseMillis+10_000), c.fragTimecode(3, baseMillis+10_000), true) // past the end
	_, media := mediaPlaylist(t, url)
	if !strings.Contains(media, "#EXT-X-ENDLIST") {
		t.Errorf("a fragment past EndTimestamp came, every one up to it is revealed: want EXT-X-ENDLIST:\n%s", media)
	}
}

// TestHLSLiveReplayRetentionKeepsSequence: a LIVE_REPLAY session whose start is near the
// retention edge (replay "the last day" of a 24 h stream). When retention deletes the session's
// oldest fragments, the segments still listed must keep their media sequence numbers, and the
// window must not jump ahead.
func TestHLSLiveReplayRetentionKeepsSequence(t *testing.T) {
	t.Parallel()
	e, clock, t0 := recorded(t, 6)
	clock.Set(t0.Add(10 * time.Second))
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxMediaPlaylistFragmentResults": 2, "Expires": 43200,
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000}}})
	if code != "" {
		t.Fatal(code)
	}
	clock.Add(2 * time.Second)
	_, before := mediaPlaylist(t, url)
	// Retention removes the first fragment (server time t0) of the session.
	if n, err := e.store.EnforceRetention(t.Context(), t0.Add(24*time.Hour+500*time.Millisecond)); err != nil || n != 1 {
		t.Fatalf("retention: %d, %v", n, err)
	}
	_, after := mediaPlaylist(t, url)
	a, b := playlistSegments(t, before), playlistSegments(t, after)
	for fn, sb := range b {
		if sa, ok := a[fn]; ok && sa[0] != sb[0] {
			t.Errorf("fragment ...%s: media sequence number %d before the retention pass, %d after", fn[len(fn)-3:], sa[0], sb[0])
		}
	}
	msn := func(m map[string][2]int) (lo int) {
		lo = 1 << 30
		for _, s := range m {
			lo = min(lo, s[0])
		}
		return lo
	}
	if msn(b) < msn(a) {
		t.Errorf("EXT-X-MEDIA-SEQUENCE went back from %d to %d", msn(a), msn(b))
	}
}

// TestHLSLiveReplaySessionsApart: two LIVE_REPLAY sessions of a stream, the second over a later
// part of it. Each reveals its own range from its own start: the first session's must not hold
// back the second's (both were created before their tokens existed, under one token state).
func TestHLSLiveReplaySessionsApart(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(16)...)
	for _, start := range []int64{baseMillis / 1000, baseMillis/1000 + 10} {
		url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
			"MaxMediaPlaylistFragmentResults": 3,
			"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
				"TimestampRange": map[string]any{"StartTimestamp": start}}})
		if code != "" {
			t.Fatalf("LIVE_REPLAY session from %d s: %s", start, code)
		}
		if _, media := mediaPlaylist(t, url); len(playlistSegments(t, media)) != 3 {
			t.Errorf("LIVE_REPLAY session from %d s, want its first 3 fragments at once:\n%s", start, media)
		}
	}
}

// TestHLSLiveReplayDiscontinuitySequenceStable: a LIVE_REPLAY window slides as the replay goes
// on, and the EXT-X-DISCONTINUITY tag of a segment that becomes the window's first is dropped:
// EXT-X-DISCONTINUITY-SEQUENCE must count it, so that every segment keeps its discontinuity
// sequence number from one playlist to the next (RFC 8216 §6.2.2), as in a LIVE window. A replay
// of a recording with gaps (a motion-triggered camera) has a marker at each.
func TestHLSLiveReplayDiscontinuitySequenceStable(t *testing.T) {
	t.Parallel()
	e, clock, t0 := clockedStream(t)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	for k, i := range []int{0, 1, 3, 4, 5, 6} { // clip fragment 2 left out: a gap before 3
		clock.Set(t0.Add(time.Duration(k) * time.Second))
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	clock.Set(t0.Add(20 * time.Second))
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxMediaPlaylistFragmentResults": 2,
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000}}})
	if code != "" {
		t.Fatal(code)
	}
	var prev map[string][2]int
	var prevMedia string
	discs := 0
	for range 5 { // the replay reveals about a fragment a second
		_, media := mediaPlaylist(t, url)
		discs += strings.Count(media, "#EXT-X-DISCONTINUITY\n")
		cur := playlistSegments(t, media)
		for fn, s := range cur {
			if p, ok := prev[fn]; ok && p != s {
				t.Errorf("fragment ...%s: (media sequence, discontinuity sequence) %v, then %v", fn[len(fn)-3:], p, s)
				t.Logf("playlists:\n%s\n%s", prevMedia, media)
			}
		}
		prev, prevMedia = cur, media
		clock.Add(time.Second)
	}
	if discs == 0 {
		t.Errorf("no playlist marked the gap")
	}
}

// TestHLSLiveReplayPaceOfFastUpload: a LIVE_REPLAY session on the server clock over fragments that
// arrived faster than real time (a producer uploading its backlog after an outage, or a recording
// uploaded with its own timestamps: six 1 s fragments received within the same second) reveals
// them at the pace of their media, as it does a camera's: the first MaxMediaPlaylistFragmentResults
// at once, then one per second. Paced by their server timestamps, every one was revealed at once,
// and the first playlist listed only the last two: a player starts at a playlist's end, so it
// never played the first four.
func TestHLSLiveReplayPaceOfFastUpload(t *testing.T) {
	t.Parallel()
	e, clock, t0 := clockedStream(t)
	numbers := e.ingest(t, "cam", loadClip(t, "h264.mkv"), 0, 6)
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxMediaPlaylistFragmentResults": 2,
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": t0.Unix() - 1}}})
	if code != "" {
		t.Fatal(code)
	}
	for _, step := range []struct {
		elapsed time.Duration
		first   int // index in numbers of the window's first fragment; the window holds two
	}{
		{0, 0},                       // the first two at once
		{500 * time.Millisecond, 0},  // the third after the 1 s the first lasts
		{1100 * time.Millisecond, 1}, // revealed
		{3100 * time.Millisecond, 3}, // two seconds later, two more
		{10 * time.Second, 4},        // all, then
	} {
		clock.Set(t0.Add(step.elapsed))
		_, media := mediaPlaylist(t, url)
		segs := playlistSegments(t, media)
		for k, i := range []int{step.first, step.first + 1} {
			if s, ok := segs[formatFragmentNumber(numbers[i])]; !ok || s[0] != step.first+k || len(segs) != 2 {
				t.Fatalf("after %v: want fragments %d and %d with media sequence numbers %d and %d:\n%s",
					step.elapsed, i, i+1, step.first, step.first+1, media)
			}
		}
	}
}
