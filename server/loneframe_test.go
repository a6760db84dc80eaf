package server

import (
	"bytes"
	"encoding/binary"
	"regexp"
	"strings"
	"testing"

	"github.com/openkvs/kvs/mkv"
)

// TestOneFramePerFragment: a camera that sends one frame per fragment (a time-lapse, an
// all-intra camera cutting a fragment per keyframe, a 1 fps stream) with no BlockDuration and no
// DefaultDuration. Each fragment after the connection's first lasts until its frame's successor
// on the producer timeline: ListFragments, EXTINF, DASH d and the fMP4 sample all say 1 s. They
// said 0 ms, EXTINF:0.000 (ffmpeg: "Cannot get correct #EXTINF value") after an
// EXT-X-DISCONTINUITY each, d="1" with a hole to the next segment, and a 1/30 s sample.
func TestOneFramePerFragment(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	for i := range c.tracks {
		c.tracks[i].DefaultDuration = 0
	}
	pc := e.startPut(t, "cam")
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	const n = 6
	for i := range n {
		fr := c.frags[0][0] // a keyframe
		fr.Timecode, fr.Duration = baseMillis+int64(i)*1000, 0
		b, err := mkv.AppendCluster(nil, fr.Timecode, []mkv.Frame{fr})
		if err != nil {
			t.Fatal(err)
		}
		pc.fragment(b, fr.Timecode, true)
	}
	pc.end()

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

	url, code := e.hlsURL(t, map[string]any{
		"StreamName":   "cam",
		"PlaybackMode": "ON_DEMAND",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	extinf := regexp.MustCompile(`(?m)^#EXTINF:(\S+),$`).FindAllStringSubmatch(media, -1)
	if len(extinf) != n {
		t.Fatalf("%d segments in\n%s", len(extinf), media)
	}
	for i, m := range extinf[1:] {
		if m[1] != "1.000" {
			t.Errorf("segment %d: EXTINF:%s, want 1.000", i+1, m[1])
		}
	}
	// The first fragment of the connection has nothing before it to go by: one marker at most.
	if k := strings.Count(media, "#EXT-X-DISCONTINUITY\n"); k > 1 {
		t.Errorf("%d EXT-X-DISCONTINUITY markers between fragments 1 s apart:\n%s", k, media)
	}
	base := url[:strings.LastIndex(url, "/")+1]
	for i, m := range regexp.MustCompile(`(?m)^getMP4MediaFragment\.mp4\?\S+$`).FindAllString(media, -1) {
		if i == 0 {
			continue
		}
		code, _, seg := httpGet(t, base+m)
		if code != 200 {
			t.Fatalf("segment %d: %d %s", i, code, seg)
		}
		if got := trunDurations(t, seg); len(got) != 1 || got[0] != 90000 {
			t.Errorf("segment %d: sample durations %v, want [90000] (1 s at 90 kHz)", i, got)
		}
	}

	durl, code := e.dashURL(t, map[string]any{
		"StreamName":   "cam",
		"PlaybackMode": "ON_DEMAND",
		"DASHFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3600}},
	})
	if code != "" {
		t.Fatal(code)
	}
	_, _, mpd := httpGet(t, durl)
	ds := regexp.MustCompile(`<S t="\d+" d="(\d+)"`).FindAllStringSubmatch(string(mpd), -1)
	if len(ds) != n {
		t.Fatalf("%d segments in\n%s", len(ds), mpd)
	}
	for i, m := range ds[1:] {
		if m[1] != "1000" {
			t.Errorf("DASH segment %d: d=%s, want 1000", i+1, m[1])
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
