package server

import (
	"regexp"
	"testing"

	"github.com/openkvs/kvs/mkv"
)

// TestAudioVideoFragmentLength: fragments as the KVS producer SDK makes them from H.264 and AAC
// (its frame order coordinator puts the frames of both tracks in timestamp order, and a cluster
// starts at a keyframe): 1 s of video each, and the audio frames presented before the next
// keyframe, the last of which ends up to 21 ms after it, where the next fragment's audio goes on.
// Each fragment lasts until the next one starts: FragmentLengthInMilliseconds is 1000 and the
// DASH d add up to the span. They were 1001-1021 ms, overlapping the next fragment by the end of
// their last audio frame, so a player of a DiscontinuityMode ALWAYS playlist played slow.
func TestAudioVideoFragmentLength(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "av", 24)
	c := loadClip(t, "h264_aac.mkv")
	var video, audio mkv.Frame
	for _, fr := range c.frags[0] {
		if fr.Track == 1 && fr.Keyframe && video.Data == nil {
			video = fr
		}
		if fr.Track == 2 && audio.Data == nil {
			audio = fr
		}
	}
	for i := range c.tracks {
		if c.tracks[i].Number == 1 {
			c.tracks[i].DefaultDuration = 40_000_000
		} else {
			c.tracks[i].DefaultDuration = 0 // AAC in Matroska from the SDK: none
		}
	}
	pc := e.startPut(t, "av")
	if pc.status != 200 {
		t.Fatalf("putMedia: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	const n = 4
	sample := 0 // audio samples sent, 1024 a frame at 48 kHz
	for i := range n {
		start := baseMillis + int64(i)*1000
		var frames []mkv.Frame
		for k := range 25 {
			v := video
			v.Timecode, v.Keyframe = start+int64(k)*40, k == 0
			frames = append(frames, v)
		}
		for ; sample*1000/48000 < (i+1)*1000; sample += 1024 {
			a := audio
			a.Timecode = baseMillis + int64(sample*1000/48000)
			frames = append(frames, a)
		}
		b, err := mkv.AppendCluster(nil, start, frames)
		if err != nil {
			t.Fatal(err)
		}
		pc.fragment(b, start, true)
	}
	pc.end()

	var list listFragmentsResponse
	e.call(t, "/listFragments", map[string]any{"StreamName": "av"}, &list)
	if len(list.Fragments) != n {
		t.Fatalf("%d fragments listed, want %d", len(list.Fragments), n)
	}
	for _, f := range list.Fragments {
		if f.FragmentLengthInMilliseconds != 1000 {
			t.Errorf("fragment at %v: FragmentLengthInMilliseconds %d, want 1000", f.ProducerTimestamp, f.FragmentLengthInMilliseconds)
		}
	}

	durl, code := e.dashURL(t, onDemandHour("av", "DASHFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	_, _, mpd := httpGet(t, durl)
	ds := regexp.MustCompile(`<S t="\d+" d="(\d+)"`).FindAllStringSubmatch(string(mpd), -1)
	if len(ds) == 0 {
		t.Fatalf("no segments in\n%s", mpd)
	}
	for i, m := range ds {
		if m[1] != "1000" {
			t.Errorf("DASH segment %d: d=%s, want 1000", i, m[1])
		}
	}
}
