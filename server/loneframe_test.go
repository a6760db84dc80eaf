package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
)

// TestOneFramePerFragment: a camera that sends one frame per fragment (a time-lapse, an
// all-intra camera cutting a fragment per keyframe, a 1 fps stream) with no BlockDuration and no
// DefaultDuration. Each fragment after the connection's first lasts until its frame's successor
// on the producer timeline: ListFragments, EXTINF, DASH d and the fMP4 sample all say 1 s. They
// said 0 ms, EXTINF:0.000 (ffmpeg: "Cannot get correct #EXTINF value") after an
// EXT-X-DISCONTINUITY each, d="1" with a hole to the next segment, and a 1/30 s sample. The
// connection's first fragment, stored with 0 ms (nothing before it to go by), is played up to the
// next fragment's start (playback.durations): it too lasts 1 s in EXTINF, d and its sample, with
// no marker after it.
func TestOneFramePerFragment(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	const n = 6
	sendOneFramePerFragment(t, e, "cam", n)

	var list listFragmentsResponse
	e.call(t, "/listFragments", map[string]any{"StreamName": "cam"}, &list)
	if len(list.Fragments) != n {
		t.Fatalf("%d fragments listed, want %d", len(list.Fragments), n)
	}
	for _, f := range list.Fragments {
		if f.ProducerTimestamp.UnixMilli() != baseMillis && f.FragmentLengthInMilliseconds != 1000 {
			t.Errorf("fragment at %v: FragmentLengthInMilliseconds %d, want 1000", f.ProducerTimestamp, f.FragmentLengthInMilliseconds)
		}
	}

	url, code := e.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	extinf := regexp.MustCompile(`(?m)^#EXTINF:(\S+),$`).FindAllStringSubmatch(media, -1)
	if len(extinf) != n {
		t.Fatalf("%d segments in\n%s", len(extinf), media)
	}
	// The last fragment has no successor: it keeps what it was stored with (1 s, from the one
	// before it).
	for i, m := range extinf {
		if m[1] != "1.000" {
			t.Errorf("segment %d: EXTINF:%s, want 1.000", i, m[1])
		}
	}
	if k := strings.Count(media, "#EXT-X-DISCONTINUITY\n"); k > 0 {
		t.Errorf("%d EXT-X-DISCONTINUITY markers between fragments 1 s apart:\n%s", k, media)
	}
	base := url[:strings.LastIndex(url, "/")+1]
	for i, m := range regexp.MustCompile(`(?m)^getMP4MediaFragment\.mp4\?\S+$`).FindAllString(media, -1) {
		code, _, seg := httpGet(t, base+m)
		if code != 200 {
			t.Fatalf("segment %d: %d %s", i, code, seg)
		}
		if got := trunDurations(t, seg); len(got) != 1 || got[0] != 90000 {
			t.Errorf("segment %d: sample durations %v, want [90000] (1 s at 90 kHz)", i, got)
		}
	}

	durl, code := e.dashURL(t, onDemandHour("cam", "DASHFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	_, _, mpd := httpGet(t, durl)
	ds := regexp.MustCompile(`<S t="\d+" d="(\d+)"`).FindAllStringSubmatch(string(mpd), -1)
	if len(ds) != n {
		t.Fatalf("%d segments in\n%s", len(ds), mpd)
	}
	for i, m := range ds {
		if m[1] != "1000" {
			t.Errorf("DASH segment %d: d=%s, want 1000", i, m[1])
		}
	}
	if want := `mediaPresentationDuration="PT6.000S"`; !strings.Contains(string(mpd), want) {
		t.Errorf("no %s in\n%s", want, mpd)
	}

	// Players see every frame, one a second.
	for _, u := range []string{url, durl} {
		got := ffprobeStreams(t, u)
		if len(got) != 1 || got[0].NbReadFrames != fmt.Sprint(n) {
			t.Errorf("ffprobe %s: %+v, want %d frames", u, got, n)
		}
	}
}

// trunDurations returns the sample durations of the first trun box in seg.
func trunDurations(t *testing.T, seg []byte) []uint32 {
	t.Helper()
	i := bytes.Index(seg, []byte("trun"))
	if i < 4 || len(seg) < i+12 {
		t.Fatal("no trun in the segment")
	}
	b := seg[i+4:]
	flags, n := binary.BigEndian.Uint32(b)&0xFFFFFF, binary.BigEndian.Uint32(b[4:])
	b = b[8:]
	if flags&0x1 != 0 { // data offset
		b = b[4:]
	}
	if flags&0x4 != 0 { // first sample flags
		b = b[4:]
	}
	var out []uint32
	for range n {
		for _, f := range []uint32{0x100, 0x200, 0x400, 0x800} {
			if flags&f == 0 {
				continue
			}
			if f == 0x100 {
				out = append(out, binary.BigEndian.Uint32(b))
			}
			b = b[4:]
		}
	}
	return out
}

// TestDASHLiveOneFrameEdge: a live DASH manifest whose newest fragment is the first of a
// time-lapse connection (one frame, stored with 0 ms: no successor yet) lists it with d="1".
// ffmpeg then asks for the next segment at t+1, which was served that same fragment again (it
// starts within hlsGapThreshold of t+1): its frame played twice. It gets the fragment after it.
func TestDASHLiveOneFrameEdge(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	pc, put := startOneFramePerFragment(t, e, "cam")
	put(0)

	durl, code := e.dashURL(t, map[string]any{"StreamName": "cam"})
	if code != "" {
		t.Fatal(code)
	}
	_, _, mpd := httpGet(t, durl)
	s := regexp.MustCompile(`<S t="(\d+)" d="(\d+)"`).FindAllStringSubmatch(string(mpd), -1)
	media := regexp.MustCompile(`media="([^"]+)"`).FindStringSubmatch(string(mpd))
	if len(s) != 1 || media == nil {
		t.Fatalf("want one segment and a media template in\n%s", mpd)
	}
	var st, sd int64
	fmt.Sscan(s[0][1], &st)
	fmt.Sscan(s[0][2], &sd)
	if sd != 1 {
		t.Fatalf("the live edge's lone frame: d=%d, want 1 (no successor yet)", sd)
	}
	put(1)
	pc.end()

	base := durl[:strings.LastIndex(durl, "/")+1]
	seg := func(ms int64) []byte {
		u := base + strings.ReplaceAll(strings.ReplaceAll(media[1], "&amp;", "&"), "$Time$", fmt.Sprint(ms))
		code, _, b := httpGet(t, u)
		if code != 200 {
			t.Fatalf("Time=%d: %d %s", ms, code, b)
		}
		return b
	}
	first, second, next := seg(st), seg(st+1000), seg(st+sd)
	if bytes.Equal(next, first) {
		t.Errorf("the segment after the first (Time=%d) is the first fragment again", st+sd)
	}
	if !bytes.Equal(next, second) {
		t.Errorf("the segment after the first (Time=%d) is not the second fragment", st+sd)
	}
}

// sendOneFramePerFragment creates stream name and sends it n fragments of one keyframe each, 1 s
// apart from baseMillis, with no BlockDuration and no DefaultDuration, on one connection.
func sendOneFramePerFragment(t *testing.T, e *mediaEnv, name string, n int) {
	t.Helper()
	pc, put := startOneFramePerFragment(t, e, name)
	for i := range n {
		put(i)
	}
	pc.end()
}

// startOneFramePerFragment creates stream name and opens an upload to it; put(i) sends a fragment
// of one keyframe at baseMillis + i s, with no BlockDuration and no DefaultDuration.
func startOneFramePerFragment(t *testing.T, e *mediaEnv, name string) (pc *putConn, put func(i int)) {
	t.Helper()
	e.createStream(t, name, 24)
	c := loadClip(t, "h264.mkv")
	for i := range c.tracks {
		c.tracks[i].DefaultDuration = 0
	}
	pc = e.startPut(t, name)
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	return pc, func(i int) {
		fr := c.frags[0][0] // a keyframe
		fr.Timecode, fr.Duration = baseMillis+int64(i)*1000, 0
		b, err := mkv.AppendCluster(nil, fr.Timecode, []mkv.Frame{fr})
		if err != nil {
			t.Fatal(err)
		}
		pc.fragment(b, fr.Timecode, true)
	}
}

// TestGetImagesOneFramePerFragment: GetImages over a stream of one frame per fragment, 1 s apart,
// has a picture for every sample up to the last fragment's end, also between the connection's
// first fragment (stored with 0 ms: nothing before it to go by) and the second. That sample was
// NO_MEDIA: the plan took the first fragment to end where it starts.
func TestGetImagesOneFramePerFragment(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "mem")
	sendOneFramePerFragment(t, e, "cam", 4)
	resp := e.post(t, t.Context(), "/getImages", map[string]any{"StreamName": "cam", "ImageSelectorType": "PRODUCER_TIMESTAMP",
		"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3.5, "SamplingInterval": 500, "Format": "JPEG",
		"WidthPixels": 32, "HeightPixels": 24})
	defer resp.Body.Close()
	var out struct {
		Images []struct {
			TimeStamp    float64
			Error        string
			ImageContent []byte
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("getImages: %d %v", resp.StatusCode, err)
	}
	if len(out.Images) != 8 {
		t.Fatalf("%d images, want 8 (every 0.5 s of 3.5 s, both ends)", len(out.Images))
	}
	for _, im := range out.Images {
		if im.Error != "" || len(im.ImageContent) == 0 {
			t.Errorf("sample at %.1f s: error %q, %d bytes; want a picture", im.TimeStamp-baseMillis/1000, im.Error, len(im.ImageContent))
		}
	}
}
