package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// dashURL calls GetDASHStreamingSessionURL and returns the URL, or the error type.
func (e *mediaEnv) dashURL(t *testing.T, body map[string]any) (string, string) {
	t.Helper()
	resp := e.post(t, t.Context(), "/getDASHStreamingSessionURL", body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", resp.Header.Get("x-amzn-ErrorType")
	}
	var out struct{ DASHStreamingSessionURL string }
	if err := json.Unmarshal(b, &out); err != nil || out.DASHStreamingSessionURL == "" {
		t.Fatalf("answer %s: %v", b, err)
	}
	return out.DASHStreamingSessionURL, ""
}

// mpd is the part of a manifest the tests check.
type mpd struct {
	Type    string `xml:"type,attr"`
	AST     string `xml:"availabilityStartTime,attr"`
	Dur     string `xml:"mediaPresentationDuration,attr"`
	Periods []struct {
		ID    string `xml:"id,attr"`
		Start string `xml:"start,attr"`
		Sets  []struct {
			ContentType string `xml:"contentType,attr"`
			Rep         struct {
				Codecs string `xml:"codecs,attr"`
				Width  int    `xml:"width,attr"`
				Height int    `xml:"height,attr"`
				Rate   int    `xml:"audioSamplingRate,attr"`
				List   struct {
					PTO   int64   `xml:"presentationTimeOffset,attr"`
					Start uint64  `xml:"startNumber,attr"`
					Init  string  `xml:"initialization,attr"`
					Media string  `xml:"media,attr"`
					S     []dashS `xml:"SegmentTimeline>S"`
				} `xml:"SegmentTemplate"`
			} `xml:"Representation"`
		} `xml:"AdaptationSet"`
	} `xml:"Period"`
}

type dashS struct {
	T  int64  `xml:"t,attr"`
	D  int64  `xml:"d,attr"`
	FN string `xml:"urn:kvs:dash:2018 fn,attr"`
	TS string `xml:"urn:kvs:dash:2018 ts,attr"`
}

// manifest fetches and parses the manifest at url.
func manifest(t *testing.T, url string) (mpd, string) {
	t.Helper()
	code, hdr, b := httpGet(t, url)
	if code != 200 || hdr.Get("Content-Type") != "application/dash+xml" {
		t.Fatalf("manifest: %d %s %s", code, hdr.Get("Content-Type"), b)
	}
	var m mpd
	if err := xml.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	return m, string(b)
}

// seconds parses an xs:duration of the form the manifests use (PT12.345S).
func seconds(t *testing.T, d string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(d, "PT"), "S"), 64)
	if err != nil {
		t.Fatalf("duration %q: %v", d, err)
	}
	return v
}

// TestDASHOnDemandFFprobe: an ON_DEMAND manifest lists every fragment of the range, one adaptation
// set per track, and ffprobe reads every frame through it. The presentation starts at the first
// fragment's timestamp (a Period's start), so audio frames before it, as the clip with AAC has
// one before its first video frame, are not presented.
func TestDASHOnDemandFFprobe(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffprobe
	for _, name := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv"} {
		t.Run(name, func(t *testing.T) {
			e := newMediaEnv(t, "mem")
			e.createStream(t, "cam", 24)
			c := loadClip(t, name)
			uploadClip(t, e, "cam", name, seq(len(c.frags))...)
			url, code := e.dashURL(t, onDemandHour("cam", "DASHFragmentSelector"))
			if code != "" {
				t.Fatal(code)
			}
			if !strings.HasPrefix(url, e.ts.URL+"/dash/v1/getDASHManifest.mpd?SessionToken=") {
				t.Errorf("url %s", url)
			}
			m, raw := manifest(t, url)
			want := wantStreams(t, name, 1)
			if m.Type != "static" || len(m.Periods) != 1 || len(m.Periods[0].Sets) != len(want) {
				t.Fatalf("want a static manifest of one period with %d adaptation sets:\n%s", len(want), raw)
			}
			first := c.fragTimecode(0, baseMillis)
			var end int64
			for i, set := range m.Periods[0].Sets {
				rep := set.Rep
				// The timeline counts from 10 s before the first fragment.
				if set.ContentType != want[i].CodecType || len(rep.List.S) != len(c.frags) || rep.List.PTO != 10_000 ||
					rep.List.S[0].T != 10_000 || !strings.Contains(rep.List.Media, fmt.Sprintf("Origin=%d&Time=$Time$", first-10_000)) {
					t.Errorf("adaptation set %d: %+v, want %s with %d segments from 10 s after %d", i, set, want[i].CodecType, len(c.frags), first-10_000)
				}
				if set.ContentType == "video" && (rep.Width != 320 || rep.Height != 240 ||
					!strings.HasPrefix(rep.Codecs, map[string]string{"h264": "avc1.", "hevc": "hvc1."}[want[i].CodecName])) {
					t.Errorf("video representation %+v", rep)
				}
				if set.ContentType == "audio" && (rep.Rate != 48000 || rep.Codecs != "mp4a.40.2") {
					t.Errorf("audio representation %+v", rep)
				}
				last := rep.List.S[len(rep.List.S)-1]
				end = last.T + last.D
			}
			if d := seconds(t, m.Dur); d != float64(end-10_000)/1000 {
				t.Errorf("mediaPresentationDuration %s, want the fragments' %d ms", m.Dur, end-10_000)
			}
			for i := range want {
				if want[i].CodecType != "audio" {
					continue
				}
				n := 0
				fmt.Sscan(want[i].NbReadFrames, &n)
				for _, fr := range c.frags[0] {
					if c.trackType(fr.Track) == mkv.TrackTypeAudio && fr.Timecode < c.frags[0][0].Timecode {
						n-- // before the cluster's timecode: before the presentation
					}
				}
				want[i].NbReadFrames = strconv.Itoa(n)
			}
			if got := ffprobeStreams(t, url); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ffprobe of the DASH URL:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestDASHGap drops a fragment: the timeline steps over the gap in one period (ffmpeg plays one
// period of a manifest), each segment carries its fragment number and server timestamp when
// asked, and ffprobe reads every frame sent.
func TestDASHGap(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	before := time.Now().Add(-time.Millisecond)
	c := uploadClip(t, e, "cam", "h264.mkv", 0, 1, 3)
	after := time.Now()
	url, code := e.dashURL(t, map[string]any{
		"StreamName":               "cam",
		"PlaybackMode":             "ON_DEMAND",
		"DisplayFragmentTimestamp": "ALWAYS",
		"DisplayFragmentNumber":    "ALWAYS",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 1 || len(m.Periods[0].Sets) != 1 || len(m.Periods[0].Sets[0].Rep.List.S) != 3 {
		t.Fatalf("want one period of 3 segments:\n%s", raw)
	}
	origin := c.fragTimecode(0, baseMillis) - 10_000
	for i, s := range m.Periods[0].Sets[0].Rep.List.S {
		idx := []int{0, 1, 3}[i]
		ts, _ := strconv.ParseInt(s.TS, 10, 64)
		if s.T != c.fragTimecode(idx, baseMillis)-origin || s.FN != formatFragmentNumber(uint64(i+1)) ||
			ts < before.UnixMilli() || ts > after.UnixMilli() {
			t.Errorf("segment %d: %+v, want t %d, fragment %d, a server time of the upload", i, s, c.fragTimecode(idx, baseMillis)-origin, i+1)
		}
	}
	got := ffprobeStreams(t, url)
	if len(got) != 1 || got[0].NbReadFrames != "75" {
		t.Errorf("ffprobe: %+v, want 75 frames", got)
	}
}

// TestDASHLive follows a producer: the manifest is dynamic, its window slides as fragments arrive
// while its period keeps its id, its clock puts the live edge at the wall clock, and ffmpeg plays
// the live URL while the producer sends.
func TestDASHLive(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	sending := time.Now().Truncate(time.Millisecond)
	pc, c, base := startLive(t, e)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 3})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	answered := time.Now()
	if m.Type != "dynamic" || len(m.Periods) != 1 || len(m.Periods[0].Sets[0].Rep.List.S) != 2 {
		t.Fatalf("first manifest:\n%s", raw)
	}
	first, id := m, m.Periods[0].ID
	// availabilityStartTime + the newest segment's end is when that segment arrived and a target
	// duration (the longest segment's, whole seconds up). It arrived after sending began and
	// before the manifest's answer, however slow the machine.
	ast, err := time.Parse(time.RFC3339Nano, m.AST)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Periods[0].Sets[0].Rep.List.S
	pto := m.Periods[0].Sets[0].Rep.List.PTO
	target := time.Duration(math.Ceil(float64(max(s[0].D, s[1].D))/1000)) * time.Second
	if edge := ast.Add(time.Duration(s[1].T+s[1].D-pto) * time.Millisecond); edge.Before(sending.Add(target)) || edge.After(answered.Add(target)) {
		t.Errorf("availabilityStartTime %s makes the newest segment available at %s, want its arrival (between %s and %s) and a target duration of %v",
			m.AST, edge, sending.Format(time.StampMilli), answered.Format(time.StampMilli), target)
	}
	for i := 2; i < 6; i++ {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	m, raw = manifest(t, url)
	s = m.Periods[0].Sets[0].Rep.List.S
	if len(m.Periods) != 1 || m.Periods[0].ID != id || len(s) != 3 ||
		s[0].T-m.Periods[0].Sets[0].Rep.List.PTO != c.fragTimecode(3, base)-c.fragTimecode(0, base) {
		t.Fatalf("manifest after 6 fragments, want period %s with fragments 3-5:\n%s", id, raw)
	}
	// Segments keep their numbers: three slid out since the first manifest.
	if got, want := m.Periods[0].Sets[0].Rep.List.Start, first.Periods[0].Sets[0].Rep.List.Start+3; first.Periods[0].Sets[0].Rep.List.Start == 0 || got != want {
		t.Errorf("startNumber %d after three segments slid out, want %d", got, want)
	}

	// ffmpeg plays the live URL while the producer sends a fragment a second, through a front
	// that counts its requests: at the end of the timeline it asks for the next segment at once
	// and, without the server's wait at the live edge, again after every 404, each time with a
	// manifest reload (5,708 requests while 10 fragments were produced, before the wait).
	var requests atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	sent := playLive(t, strings.Replace(url, e.ts.URL, front.URL, 1), pc, c, base, 6)
	if sent < 8 {
		t.Errorf("only %d fragments were produced while ffmpeg played 7 s: it did not follow the live manifest", sent)
	}
	// A manifest and a segment per fragment, a few more where ffmpeg asks again (and after a
	// wait's 404, should a fragment come more than 5 s late on a loaded machine); polling made
	// hundreds per fragment.
	if n := requests.Load(); n > 20*int64(sent) {
		t.Errorf("ffmpeg made %d requests while %d fragments were produced: it polled the live edge", n, sent)
	}
}

// TestDASHLiveEdgeWait asks for the segment after the last one a live manifest lists before its
// fragment exists: the request waits for it and gets it. A request for a time past the next
// fragment, or in an ON_DEMAND session, gets 404.
func TestDASHLiveEdgeWait(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	pc, c, base := startLive(t, e)
	le := openLiveEdge(t, e)
	got := le.waiting(t, e)
	pc.fragment(c.cluster(t, 2, base), c.fragTimecode(2, base), true)
	if a := <-got; !a.isFragment(3) {
		t.Fatalf("segment after the live edge: %d %q, want fragment 3's moof", a.code, a.body[:min(len(a.body), 64)])
	}
	// Past the next fragment's start: 404, nothing will come there.
	if a := le.segment(le.next + 2000); a.code != http.StatusNotFound {
		t.Errorf("segment two fragments past the live edge: %d %s, want 404", a.code, a.body)
	}
}

// liveEdge is a live DASH session's first manifest, of a stream startLive began: two segments
// listed, the third fragment not yet sent.
type liveEdge struct {
	dir, media string // the manifest's directory URL and its media template
	next       int64  // the third fragment's $Time$: where the second one ends
}

type segmentAnswer struct {
	code int
	body []byte
}

func openLiveEdge(t *testing.T, e *mediaEnv) liveEdge {
	t.Helper()
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam"})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 1 || len(m.Periods[0].Sets) != 1 || len(m.Periods[0].Sets[0].Rep.List.S) != 2 {
		t.Fatalf("first manifest:\n%s", raw)
	}
	list := m.Periods[0].Sets[0].Rep.List
	return liveEdge{dir: url[:strings.LastIndex(url, "/")+1], media: list.Media, next: list.S[1].T + list.S[1].D}
}

// segment gets the media segment at (its $Time$); from any goroutine.
func (le liveEdge) segment(at int64) segmentAnswer {
	resp, err := http.Get(le.dir + strings.ReplaceAll(le.media, "$Time$", strconv.FormatInt(at, 10)))
	if err != nil {
		return segmentAnswer{0, []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return segmentAnswer{0, []byte(err.Error())}
	}
	return segmentAnswer{resp.StatusCode, b}
}

// waiting asks for the segment at le.next on e's server and returns once the request waits for
// its fragment (it has subscribed to the stream's notices); the answer comes on the channel.
func (le liveEdge) waiting(t *testing.T, e *mediaEnv) <-chan segmentAnswer {
	t.Helper()
	got := make(chan segmentAnswer, 1)
	go func() { got <- le.segment(le.next) }()
	for waiting := false; !waiting; {
		n := e.srv.media.notify.(*localNotifier)
		n.mu.Lock()
		waiting = len(n.subs["cam"]) > 0
		n.mu.Unlock()
		select {
		case a := <-got:
			t.Fatalf("the request for the segment after the live edge ended before it waited: %d %s", a.code, a.body)
		case <-time.After(time.Millisecond):
		}
	}
	return got
}

// isFragment reports whether a segment is fragment n's (its moof's sequence number).
func (a segmentAnswer) isFragment(n uint32) bool {
	return a.code == http.StatusOK && len(a.body) >= 24 && string(a.body[12:16]) == "mfhd" && binary.BigEndian.Uint32(a.body[20:24]) == n
}

// TestDASHLiveReplayReveal: in a LIVE_REPLAY session over stored fragments, ffmpeg asks for the
// segment after the manifest's window as soon as it reaches it, and again after each answer
// until a manifest lists it. The request waits for the replay to reveal the fragment, so each
// segment is asked for at most a few times (224-234 times, before the wait); a
// segment seconds ahead of the replay gets 404.
func TestDASHLiveReplayReveal(t *testing.T) {
	testutil.Slow(t) // ffmpeg plays 5 s
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := uploadClip(t, e, "cam", "h264.mkv", seq(16)...)
	var mu sync.Mutex
	asks := map[string]int{} // media requests by Time
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "getMP4MediaFragment.mp4") {
			mu.Lock()
			asks[r.URL.Query().Get("Time")]++
			mu.Unlock()
		}
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY", "MaxManifestFragmentResults": 3,
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000}}})
	if code != "" {
		t.Fatal(code)
	}
	url = strings.Replace(url, e.ts.URL, front.URL, 1)
	m, raw := manifest(t, url)
	if m.Type != "dynamic" || len(m.Periods) != 1 || len(m.Periods[0].Sets[0].Rep.List.S) != 3 {
		t.Fatalf("first manifest, want 3 segments of a dynamic one:\n%s", raw)
	}
	list := m.Periods[0].Sets[0].Rep.List
	dir := url[:strings.LastIndex(url, "/")+1]
	// The 12th fragment plays about 9 s from now: not waited for.
	twelfth := list.S[0].T + c.fragTimecode(11, baseMillis) - c.fragTimecode(0, baseMillis)
	if code, _, body := httpGet(t, dir+strings.ReplaceAll(list.Media, "$Time$", strconv.FormatInt(twelfth, 10))); code != http.StatusNotFound {
		t.Errorf("segment 9 s ahead of the replay: %d %q, want 404", code, body[:min(len(body), 80)])
	}
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "error", "-i", url, "-t", "5", "-f", "framecrc", "-")
	testutil.DieWithTest(cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg on the LIVE_REPLAY URL: %v\n%s", err, stderr.String())
	}
	// 5 s of the 25 fps clip are about 125 frames. ffmpeg's dashdec (refresh_manifest,
	// get_current_fragment) compares its place in the SegmentTimeline, an index, with the new
	// manifest's startNumber: when the replay's window slides between its first manifest and the
	// next, which a loaded machine makes likely, it jumps to the index startNumber and steps over
	// one segment (seen: 11000, then 13000). 75 frames (3 s) tell that the replay plays on.
	if frames := strings.Count("\n"+string(out), "\n0,"); frames < 75 {
		t.Errorf("ffmpeg decoded %d frames from 5 s of the replay; its messages:\n%s", frames, stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	for at, n := range asks {
		if n > 3 {
			t.Errorf("the segment at Time=%s was asked for %d times (all asks: %v)", at, n, asks)
			break
		}
	}
}

// TestDASHLiveReplayEndKeepsTimeline: a LIVE_REPLAY session with an EndTimestamp turns static
// once the replay has revealed its whole range and the stream has gone past it. A player that
// followed its dynamic manifests reads the last one as an update of the same presentation
// (ISO/IEC 23009-1 5.4): a segment listed by both keeps its period (id) and its presentation
// time. The static manifest was re-based at its window's first fragment, under that fragment's
// period id: ffmpeg (5.1), following the replay, then asked for the last segment again and again
// (2,965 times in 15 s, each remuxed by the server).
func TestDASHLiveReplayEndKeepsTimeline(t *testing.T) {
	t.Parallel()
	e, clock, t0 := recorded(t, 9) // producer times 0, 1, 2, 3, 4.1, 5.1, 6.1, 7.1, 8.1 s
	clock.Set(t0.Add(20 * time.Second))
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "LIVE_REPLAY",
		"MaxManifestFragmentResults": 3, "DisplayFragmentNumber": "ALWAYS",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 7}}})
	if code != "" {
		t.Fatal(code)
	}
	// segments returns, per fragment number listed, its period's id and presentation time (ms).
	segments := func() (string, map[string]string, map[string]int64, string) {
		m, raw := manifest(t, url)
		ids, at := map[string]string{}, map[string]int64{}
		for _, pd := range m.Periods {
			list := pd.Sets[0].Rep.List
			for _, s := range list.S {
				ids[s.FN], at[s.FN] = pd.ID, int64(seconds(t, pd.Start)*1000)+s.T-list.PTO
				if m.Type == "static" && at[s.FN]+s.D > int64(seconds(t, m.Dur)*1000) {
					t.Errorf("segment of fragment %s ends at %d ms, after the presentation's %s:\n%s", s.FN, at[s.FN]+s.D, m.Dur, raw)
				}
			}
		}
		return m.Type, ids, at, raw
	}
	segments()
	clock.Add(2500 * time.Millisecond) // the replay has revealed fragments 0-4 of the range's 0-6
	typ1, ids1, at1, raw1 := segments()
	clock.Add(time.Minute) // every one revealed, and fragment 7 is past the end
	typ2, ids2, at2, raw2 := segments()
	if typ1 != "dynamic" || typ2 != "static" {
		t.Fatalf("manifests of type %s, then %s; want dynamic, then static:\n%s\n%s", typ1, typ2, raw1, raw2)
	}
	common := 0
	for fn, id := range ids2 {
		if _, ok := ids1[fn]; ok {
			common++
			if ids1[fn] != id || at1[fn] != at2[fn] {
				t.Errorf("fragment %s: period %s at %d ms, then period %s at %d ms", fn, ids1[fn], at1[fn], id, at2[fn])
			}
		}
	}
	if common == 0 {
		t.Errorf("no segment listed by both manifests:\n%s\n%s", raw1, raw2)
	}
	if t.Failed() {
		t.Logf("manifests:\n%s\n%s", raw1, raw2)
	}
}

func TestGetDASHStreamingSessionURLErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	e.createStream(t, "empty", 24)
	e.createStream(t, "live-only", 0)
	uploadClip(t, e, "cam", "h264_aac.mkv", 0, 1)
	onDemand := func(stream string) map[string]any {
		return map[string]any{"StreamName": stream, "PlaybackMode": "ON_DEMAND",
			"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
				"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 60}}}
	}
	for _, tc := range []struct {
		name string
		body map[string]any
		want string
	}{
		{"range with LIVE", map[string]any{"StreamName": "cam", "DASHFragmentSelector": map[string]any{
			"TimestampRange": map[string]any{"StartTimestamp": 1}}}, codeInvalidArgument},
		{"ON_DEMAND without range", map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND"}, codeInvalidArgument},
		{"DisplayFragmentNumber", map[string]any{"StreamName": "cam", "DisplayFragmentNumber": "SOMETIMES"}, codeInvalidArgument},
		{"MaxManifestFragmentResults", map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 5001}, codeInvalidArgument},
		{"Expires", map[string]any{"StreamName": "cam", "Expires": 299}, codeInvalidArgument},
		{"unknown stream", onDemand("nope"), codeResourceNotFound},
		{"no retention", onDemand("live-only"), codeNoDataRetention},
		{"no fragments", onDemand("empty"), codeResourceNotFound},
	} {
		if _, got := e.dashURL(t, tc.body); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// The messages name DASH's members.
	resp := e.post(t, t.Context(), "/getDASHStreamingSessionURL", map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 0})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "MaxManifestFragmentResults") {
		t.Errorf("error %s does not name MaxManifestFragmentResults", b)
	}

	dash, code := e.dashURL(t, onDemand("cam"))
	if code != "" {
		t.Fatal(code)
	}
	hls, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND",
		"HLSFragmentSelector": onDemand("cam")["DASHFragmentSelector"]})
	if code != "" {
		t.Fatal(code)
	}
	tokenOf := func(u string) string {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		return p.Query().Get("SessionToken")
	}
	m, _ := manifest(t, dash)
	list := m.Periods[0].Sets[0].Rep.List
	origin := list.Media[strings.Index(list.Media, "Origin="):strings.Index(list.Media, "&Time=")]
	first := origin + "&Time=" + strconv.FormatInt(list.S[0].T, 10)
	for _, tc := range []struct {
		name, path string
		status     int
		typ        string
	}{
		{"an HLS token on the manifest", "/dash/v1/getDASHManifest.mpd?SessionToken=" + tokenOf(hls), 404, codeResourceNotFound},
		{"a DASH token on the HLS playlist", "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=" + tokenOf(dash), 404, codeResourceNotFound},
		{"a track the fragment lacks", "/dash/v1/getMP4MediaFragment.mp4?SessionToken=" + tokenOf(dash) + "&TrackNumber=3&" + first, 400, codeInvalidArgument},
		{"no fragment at the time", "/dash/v1/getMP4MediaFragment.mp4?SessionToken=" + tokenOf(dash) + "&TrackNumber=1&" + origin + "&Time=1", 404, codeResourceNotFound},
		{"no time", "/dash/v1/getMP4MediaFragment.mp4?SessionToken=" + tokenOf(dash) + "&TrackNumber=1", 400, codeInvalidArgument},
	} {
		code, hdr, body := httpGet(t, e.ts.URL+tc.path)
		if code != tc.status || hdr.Get("x-amzn-ErrorType") != tc.typ {
			t.Errorf("%s: %d %s %s, want %d %s", tc.name, code, hdr.Get("x-amzn-ErrorType"), body, tc.status, tc.typ)
		}
	}

	// The audio track's media segment holds audio alone, and is a segment of the init's track.
	base := dash[:strings.LastIndex(dash, "/")+1]
	audio := m.Periods[0].Sets[1].Rep.List
	code2, _, init := httpGet(t, base+strings.ReplaceAll(audio.Init, "&amp;", "&"))
	code3, _, seg := httpGet(t, base+strings.ReplaceAll(audio.Media, "$Time$", strconv.FormatInt(audio.S[0].T, 10)))
	if code2 != 200 || code3 != 200 || !strings.Contains(string(init), "esds") || strings.Contains(string(init), "avcC") ||
		!strings.Contains(string(seg), "moof") {
		t.Errorf("audio init %d (%d bytes), segment %d (%d bytes)", code2, len(init), code3, len(seg))
	}
}

// trackType is the type of the clip's track number n.
func (c *clip) trackType(n uint64) uint8 {
	for _, t := range c.tracks {
		if t.Number == n {
			return t.Type
		}
	}
	return 0
}

// TestDASHGStreamer plays an ON_DEMAND manifest with GStreamer's DASH demuxer, a second player
// that reads every S element: it decodes every video frame and every audio sample of the
// presentation. (Live manifests are left to ffmpeg, TestDASHLive: GStreamer 1.22's dashdemux
// jumps ahead of the live edge after its first manifest updates, by its own clock, see
// server/dash.go.)
func TestDASHGStreamer(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives GStreamer
	gst := testutil.NeedTool(t, "gst-launch-1.0")
	for _, plugin := range []string{"dashdemux", "avdec_h264", "avdec_aac"} {
		if exec.Command(testutil.NeedTool(t, "gst-inspect-1.0"), plugin).Run() != nil {
			testutil.Missing(t, "GStreamer's "+plugin+" is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-libav)")
		}
	}
	// gstreamer runs a pipeline and returns the sizes of the files named in it.
	gstreamer := func(t *testing.T, ctx context.Context, url string, pipeline string, files ...string) []int64 {
		t.Helper()
		dir := t.TempDir()
		args := []string{"-q"}
		for _, a := range strings.Fields(pipeline) {
			a = strings.ReplaceAll(a, "URL", url)
			args = append(args, strings.ReplaceAll(a, "DIR", dir))
		}
		cmd := exec.CommandContext(ctx, gst, args...)
		testutil.DieWithTest(cmd)
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("gst-launch-1.0 on %s: %v\n%s", url, err, out)
		}
		sizes := make([]int64, len(files))
		for i, name := range files {
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
				sizes[i] = fi.Size()
			}
		}
		return sizes
	}
	const frame = 320 * 240 * 3 / 2 // an I420 picture of the clips

	{
		e := newMediaEnv(t, "mem")
		e.createStream(t, "cam", 24)
		c := loadClip(t, "h264_aac.mkv")
		uploadClip(t, e, "cam", "h264_aac.mkv", seq(len(c.frags))...)
		url, code := e.dashURL(t, onDemandHour("cam", "DASHFragmentSelector"))
		if code != "" {
			t.Fatal(code)
		}
		want := wantStreams(t, "h264_aac.mkv", 1)
		var frames, aac int
		fmt.Sscan(want[0].NbReadFrames, &frames)
		fmt.Sscan(want[1].NbReadFrames, &aac)
		samples := aac * 1024
		// GStreamer cuts the audio before the presentation's start (the first video frame).
		for _, fr := range c.frags[0] {
			if start := c.frags[0][0].Timecode; c.trackType(fr.Track) == mkv.TrackTypeAudio && fr.Timecode < start {
				samples -= min(1024, int(start-fr.Timecode)*48)
			}
		}
		got := gstreamer(t, t.Context(), url, "uridecodebin uri=URL name=d"+
			" d. ! queue ! videoconvert ! video/x-raw,format=I420 ! filesink location=DIR/v.yuv"+
			" d. ! queue ! audioconvert ! audio/x-raw,format=S16LE,channels=1,rate=48000 ! filesink location=DIR/a.pcm", "v.yuv", "a.pcm")
		if got[0] != int64(frames*frame) || got[1] != int64(samples*2) {
			t.Errorf("GStreamer decoded %d pictures and %d samples, want %d and %d", got[0]/frame, got[1]/2, frames, samples)
		}
	}
}

// TestDASHGStreamerLive: GStreamer's dashdemux plays a live session 10 s behind the live edge
// (its presentation-delay). With a window that reaches that far back (MaxManifestFragmentResults
// 30), it asks for the segments in turn, none skipped, while the producer sends one a second.
// (In the default window of 5 it skipped ahead by whole windows: server/dash.go.)
func TestDASHGStreamerLive(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // GStreamer plays 10 s of live media
	gst := testutil.NeedTool(t, "gst-launch-1.0")
	for _, plugin := range []string{"dashdemux", "avdec_h264"} {
		if exec.Command(testutil.NeedTool(t, "gst-inspect-1.0"), plugin).Run() != nil {
			testutil.Missing(t, "GStreamer's "+plugin+" is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-libav)")
		}
	}
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	base := time.Now().Add(-15 * time.Second).UnixMilli() // 15 s of history, then live
	for i := range 15 {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	ctx, stop := context.WithCancel(t.Context())
	produced := produceLive(ctx, pc, c, base, 15)
	defer func() { stop(); <-produced }()
	var mu sync.Mutex
	var asked []int64 // the media requests' Times, in order
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "getMP4MediaFragment.mp4") {
			at, _ := strconv.ParseInt(r.URL.Query().Get("Time"), 10, 64)
			mu.Lock()
			asked = append(asked, at)
			mu.Unlock()
		}
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 30})
	if code != "" {
		t.Fatal(code)
	}
	url = strings.Replace(url, e.ts.URL, front.URL, 1)
	play, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(play, gst, "-q", "playbin", "uri="+url, "video-sink=fakesink sync=true", "audio-sink=fakesink")
	testutil.DieWithTest(cmd)
	if out, err := cmd.CombinedOutput(); play.Err() == nil {
		t.Fatalf("gst-launch-1.0 on %s ended before 10 s of live playback: %v\n%s", url, err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) < 6 {
		t.Fatalf("GStreamer asked for %d segments in 10 s of live playback: %v", len(asked), asked)
	}
	for i := 1; i < len(asked); i++ { // a fragment of the clip lasts 1 s, 1.06 s where it loops
		if d := asked[i] - asked[i-1]; d < 0 || d > 1100 {
			t.Fatalf("GStreamer went from the segment at %d to %d ms: %v", asked[i-1], asked[i], asked)
		}
	}
}

// TestDASHTimestampsBack: a producer restarted twice with its timestamps going back (the same
// clip from the same base each time: 3, 2 and 1 fragments). Listed by server timestamp, each run
// is a Period that starts where the one before ends, the presentation lasts as long as all
// three, and GStreamer (playbin3, which follows new periods) decodes every picture.
func TestDASHTimestampsBack(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives GStreamer
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1, 2)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1)
	uploadClip(t, e, "cam", "h264.mkv", 0)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}}})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 3 {
		t.Fatalf("want 3 periods:\n%s", raw)
	}
	var end float64 // where the period before ends, s
	for k, pd := range m.Periods {
		list := pd.Sets[0].Rep.List
		last := list.S[len(list.S)-1]
		if start := seconds(t, pd.Start); start != end {
			t.Errorf("period %d starts at %g s, want at the end of the one before, %g s", k, start, end)
		}
		end = seconds(t, pd.Start) + float64(last.T+last.D-list.PTO)/1000
	}
	if d := seconds(t, m.Dur); d != end {
		t.Errorf("mediaPresentationDuration %s, want the periods' %g s:\n%s", m.Dur, end, raw)
	}

	gst := testutil.NeedTool(t, "gst-launch-1.0")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gst, "-q", "playbin3", "uri="+url, "audio-sink=fakesink",
		"video-sink=videoconvert ! video/x-raw,format=I420 ! filesink location="+filepath.Join(dir, "v.yuv")).CombinedOutput()
	fi, statErr := os.Stat(filepath.Join(dir, "v.yuv"))
	if err != nil || statErr != nil {
		t.Fatalf("gst-launch-1.0 on %s: %v %v\n%s", url, err, statErr, out)
	}
	const frame = 320 * 240 * 3 / 2
	if got := fi.Size() / frame; got != 6*25 {
		t.Errorf("GStreamer decoded %d pictures, want the 150 of 6 fragments", got)
	}
}

// TestDASHSameTimesAcrossPeriods: a producer restarted with the timestamps of its first run (the
// same clip from the same base), so two periods list segments at the same times. Each segment
// requested through a period's template is the fragment listed there (its moof's sequence
// number is the fragment number, kvs:fn), not the earlier run's at the same time.
func TestDASHSameTimesAcrossPeriods(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1, 2)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "DisplayFragmentNumber": "ALWAYS",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": time.Now().Unix() - 3600, "EndTimestamp": time.Now().Unix() + 3600}}})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 2 {
		t.Fatalf("want 2 periods:\n%s", raw)
	}
	base := url[:strings.LastIndex(url, "/")+1]
	for _, pd := range m.Periods {
		list := pd.Sets[0].Rep.List
		for _, s := range list.S {
			seg := base + strings.ReplaceAll(list.Media, "$Time$", strconv.FormatInt(s.T, 10))
			code, _, b := httpGet(t, seg)
			n, err := parseFragmentNumber(s.FN)
			if code != 200 || err != nil || len(b) < 24 || string(b[4:8]) != "moof" || string(b[12:16]) != "mfhd" {
				t.Fatalf("period %s, segment t=%d: %d %v %q", pd.ID, s.T, code, err, b[:min(len(b), 64)])
			}
			if got := binary.BigEndian.Uint32(b[20:24]); got != uint32(n) {
				t.Errorf("period %s, segment t=%d: fragment %d served, want %d (kvs:fn)", pd.ID, s.T, got, n)
			}
		}
	}
}

// TestDASHLiveTimestampsBack: a live producer restarts with its clock a minute back. The
// dynamic manifest starts a Period for the new run, and once the old run has slid out of the
// window that Period keeps its id, its place on the wall clock (availabilityStartTime + start)
// and its segments' times: a segment listed by two manifests is presented at the same time by
// both, no S@t is negative, and every segment listed can be fetched.
func TestDASHLiveTimestampsBack(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	pc, c, _ := startLive(t, e)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 3, "DisplayFragmentNumber": "ALWAYS"})
	if code != "" {
		t.Fatal(code)
	}
	// segments returns, per fragment number listed, its period's id and its presentation time on
	// the wall clock (Unix ms), checking that each one is served.
	base := url[:strings.LastIndex(url, "/")+1]
	segments := func() (map[string]string, map[string]int64, string) {
		m, raw := manifest(t, url)
		ast, err := time.Parse(time.RFC3339Nano, m.AST)
		if m.Type != "dynamic" || err != nil {
			t.Fatalf("manifest (%v):\n%s", err, raw)
		}
		ids, at := map[string]string{}, map[string]int64{}
		for _, pd := range m.Periods {
			list := pd.Sets[0].Rep.List
			start := int64(seconds(t, pd.Start) * 1000)
			for _, s := range list.S {
				if s.T < 0 {
					t.Errorf("period %s lists a segment at t=%d:\n%s", pd.ID, s.T, raw)
					continue
				}
				ids[s.FN], at[s.FN] = pd.ID, ast.UnixMilli()+start+s.T-list.PTO
				if code, _, b := httpGet(t, base+strings.ReplaceAll(list.Media, "$Time$", strconv.FormatInt(s.T, 10))); code != 200 {
					t.Errorf("segment t=%d of period %s: %d %s", s.T, pd.ID, code, b)
				}
			}
		}
		return ids, at, raw
	}
	segments()
	pc.end()
	pc = e.startPut(t, "cam")
	pc.write(c.header())
	back := time.Now().Add(-70 * time.Second).UnixMilli()
	for i := range 2 {
		pc.fragment(c.cluster(t, i, back), c.fragTimecode(i, back), true)
	}
	ids1, at1, raw1 := segments()
	for i := 2; i < 4; i++ {
		pc.fragment(c.cluster(t, i, back), c.fragTimecode(i, back), true)
	}
	ids2, at2, raw2 := segments()
	for fn, id := range ids2 {
		if _, ok := ids1[fn]; ok && (ids1[fn] != id || at1[fn] != at2[fn]) {
			t.Errorf("fragment %s: period %s at %d ms, then period %s at %d ms", fn, ids1[fn], at1[fn], id, at2[fn])
		}
	}
	if t.Failed() {
		t.Logf("manifests:\n%s\n%s", raw1, raw2)
	}
}

// TestDASHLiveEdgeWaitCluster: on a cluster node that does not write the stream (and serves no
// GetMedia of it, so no feeder fills its cache), a request for the segment after the live edge
// is woken by the cluster's commit notice of the fragment and gets it, rather than waiting out
// the whole wait for a local notice that never comes and getting 404.
func TestDASHLiveEdgeWaitCluster(t *testing.T) {
	t.Parallel()
	nodes := newCluster(t, 2, nil, nil)
	pc, c, base := startLive(t, nodes[0]) // node 0 writes the stream
	reader := nodes[1]
	le := openLiveEdge(t, reader)
	got := le.waiting(t, reader)
	pc.fragment(c.cluster(t, 2, base), c.fragTimecode(2, base), true)
	if a := <-got; !a.isFragment(3) {
		t.Fatalf("segment after the live edge on the reading node: %d %q, want fragment 3's moof", a.code, a.body[:min(len(a.body), 64)])
	}
}

// lookHook is a store that runs hook (once) right after the first producer-time TimeRange that
// follows the hook's setting: a fragment stored between two looks of one request.
type lookHook struct {
	store.Store
	hook atomic.Pointer[func()]
}

func (s *lookHook) TimeRange(ctx context.Context, stream string, kind store.TimeKind, start, end time.Time, after store.Cursor, limit int) ([]store.FragmentMeta, error) {
	got, err := s.Store.TimeRange(ctx, stream, kind, start, end, after, limit)
	if kind == store.ProducerTime {
		if h := s.hook.Swap(nil); h != nil {
			(*h)()
		}
	}
	return got, err
}

// TestDASHLiveEdgeFragmentDuringLook: the fragment a live-edge segment request asks for is
// stored (and its readers notified) right after the request's first look found nothing: the
// request serves it, rather than taking it for a sign that the stream has gone past the
// requested time and answering 404.
func TestDASHLiveEdgeFragmentDuringLook(t *testing.T) {
	t.Parallel()
	st := &lookHook{Store: store.NewMem()}
	e := newMediaEnvStore(t, st)
	startLive(t, e)
	le := openLiveEdge(t, e)
	last, err := st.Last(t.Context(), "cam")
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := st.AppendPayload(t.Context(), "cam", last.Number, nil)
	if err != nil {
		t.Fatal(err)
	}
	hookErr := make(chan error, 1)
	hook := func() { // in the request's goroutine, between its looks: fragment 3, as PutMedia stores it
		ctx := context.Background()
		n, err := st.Store.NextNumber(ctx, "cam")
		if err == nil {
			at := last.ProducerTime.Add(last.Duration)
			err = store.Append(ctx, st.Store, "cam", store.FragmentMeta{Number: n, ServerTime: time.Now(), ProducerTime: at, Duration: last.Duration}, data)
		}
		e.srv.media.notify.notify("cam")
		hookErr <- err
	}
	st.hook.Store(&hook)
	a := le.segment(le.next)
	if err := <-hookErr; err != nil {
		t.Fatal(err)
	}
	if !a.isFragment(3) {
		t.Fatalf("segment after the live edge, stored during the request: %d %q, want fragment 3's moof", a.code, a.body[:min(len(a.body), 64)])
	}
}

// TestDASHLiveEdgeWaitEndsOnClose: Server.Close ends a live-edge segment request's wait, as it
// ends live GetMedia responses, with a 503 the player may retry elsewhere: a graceful shutdown
// (kvs server's, which waits for open requests) is not held up to the wait's bound.
func TestDASHLiveEdgeWaitEndsOnClose(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	startLive(t, e)
	got := openLiveEdge(t, e).waiting(t, e)
	e.srv.Close()
	if a := <-got; a.code != http.StatusServiceUnavailable {
		t.Errorf("segment request waiting at the live edge during Close: %d %s, want 503", a.code, a.body)
	}
}

// TestDASHProducerClockAtEpoch: a producer whose timestamps start at the Unix epoch (RELATIVE
// timecodes with a start timestamp of 0, as KVS's own samples show, or a camera without NTP or a
// real-time clock, which boots at 1970-01-01) is played through DASH as any other: its period's
// origin, 10 s before its first fragment, lies before the epoch, and the media requests that name
// it were InvalidArgumentException (ffmpeg: "Error when loading first fragment of playlist").
func TestDASHProducerClockAtEpoch(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffprobe
	e := newMediaEnv(t, "mem")
	c := uploadAtEpoch(t, e, "cam")
	now := time.Now().Unix()
	url, code := e.dashURL(t, map[string]any{
		"StreamName":   "cam",
		"PlaybackMode": "ON_DEMAND",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": now - 3600, "EndTimestamp": now + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 1 || len(m.Periods[0].Sets) != 1 || len(m.Periods[0].Sets[0].Rep.List.S) != len(c.frags) {
		t.Fatalf("want one period of %d segments:\n%s", len(c.frags), raw)
	}
	if got, want := ffprobeStreams(t, url), wantStreams(t, "h264.mkv", 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ffprobe of the DASH URL:\n got %+v\nwant %+v", got, want)
	}
}

// TestDASHAudioEndsBeforeVideo: a stream whose audio stops before its video (a file whose audio
// track is shorter, a camera whose microphone stops) has fragments with no frame of the audio
// track. The manifest lists an audio segment for each fragment; each must be a segment a player
// takes (one that holds no sample), not an error: InvalidMediaFrameException (400) there made
// GStreamer's dashdemux fail the whole playback.
func TestDASHAudioEndsBeforeVideo(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives GStreamer
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264_aac.mkv")
	// The audio ends with the second fragment.
	video, audio := 0, 0
	for i := range c.frags {
		var kept []mkv.Frame
		for _, fr := range c.frags[i] {
			switch {
			case c.trackType(fr.Track) == mkv.TrackTypeVideo:
				video++
			case i >= 2:
				continue
			default:
				audio++
			}
			kept = append(kept, fr)
		}
		c.frags[i] = kept
	}
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	for i := range c.frags {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	url, code := e.dashURL(t, onDemandHour("cam", "DASHFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	m, raw := manifest(t, url)
	if len(m.Periods) != 1 || len(m.Periods[0].Sets) != 2 {
		t.Fatalf("want one period with a video and an audio adaptation set:\n%s", raw)
	}
	base := url[:strings.LastIndex(url, "/")+1]
	for _, set := range m.Periods[0].Sets {
		tmpl := strings.ReplaceAll(set.Rep.List.Media, "&amp;", "&")
		for _, s := range set.Rep.List.S {
			u := base + strings.ReplaceAll(tmpl, "$Time$", strconv.FormatInt(s.T, 10))
			if code, _, b := httpGet(t, u); code != 200 {
				t.Errorf("%s segment at %d: %d %s", set.ContentType, s.T, code, b)
			}
		}
	}

	gst := testutil.NeedTool(t, "gst-launch-1.0")
	for _, plugin := range []string{"dashdemux", "avdec_h264", "avdec_aac"} {
		if exec.Command(testutil.NeedTool(t, "gst-inspect-1.0"), plugin).Run() != nil {
			testutil.Missing(t, "GStreamer's "+plugin+" is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-libav)")
		}
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), gst, "-q", "uridecodebin", "uri="+url, "name=d",
		"d.", "!", "queue", "!", "videoconvert", "!", "video/x-raw,format=I420", "!", "filesink", "location="+filepath.Join(dir, "v.yuv"),
		"d.", "!", "queue", "!", "audioconvert", "!", "audio/x-raw,format=S16LE,channels=1,rate=48000", "!", "filesink", "location="+filepath.Join(dir, "a.pcm"))
	testutil.DieWithTest(cmd)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("gst-launch-1.0 on %s: %v\n%s", url, err, out)
	}
	const frame = 320 * 240 * 3 / 2
	size := func(name string) int64 {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	if v, a := size("v.yuv"), size("a.pcm"); v != int64(video*frame) || a == 0 || a > int64(audio*1024*2) {
		t.Errorf("GStreamer decoded %d pictures and %d audio samples, want %d pictures and up to %d samples", v/frame, a/2, video, audio*1024)
	}
}
