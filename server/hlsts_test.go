package server

// HLS sessions of ContainerFormat MPEG_TS: getTSFragment.ts segments (mkv/mpegts).

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// tsSession is an ON_DEMAND session over the hour from baseMillis of stream cam, in container
// format container.
func tsSession(t *testing.T, e *mediaEnv, container string) string {
	t.Helper()
	body := onDemandHour("cam", "HLSFragmentSelector")
	body["ContainerFormat"] = container
	url, code := e.hlsURL(t, body)
	if code != "" {
		t.Fatalf("GetHLSStreamingSessionURL %s: %s", container, code)
	}
	return url
}

var segmentURI = regexp.MustCompile(`(?m)^(get(?:TSFragment\.ts|MP4MediaFragment\.mp4)\?\S+)$`)

// tsProbeStream is what ffprobe says of one stream of a segment.
type tsProbeStream struct {
	CodecName    string `json:"codec_name"`
	NbReadFrames string `json:"nb_read_frames"`
	StartPTS     int64  `json:"start_pts"`
	TimeBase     string `json:"time_base"`
}

// probeFile runs ffprobe (frames counted) on the file holding b; it must say nothing on stderr.
func probeFile(t *testing.T, name string, b []byte) []tsProbeStream {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffprobe"), "-v", "error", "-count_frames", "-show_streams", "-of", "json", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe %s: %v\n%s", name, err, stderr.String())
	}
	var res struct{ Streams []tsProbeStream }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res.Streams
}

// on90k is a stream's start_pts on the 90 kHz clock modulo 2^33.
func (s tsProbeStream) on90k(t *testing.T) int64 {
	var num, den int64
	if _, err := fmt.Sscanf(s.TimeBase, "%d/%d", &num, &den); err != nil {
		t.Fatalf("time_base %q", s.TimeBase)
	}
	v := new(big.Int).Mul(big.NewInt(s.StartPTS), big.NewInt(90000*num)) // over 2^63 for 90 kHz epoch times
	v.Add(v, big.NewInt(den/2)).Div(v, big.NewInt(den))
	return v.And(v, big.NewInt(1<<33-1)).Int64()
}

// TestHLSMPEGTS plays ON_DEMAND sessions of ContainerFormat MPEG_TS: a media playlist of
// getTSFragment.ts segments without EXT-X-MAP, each segment an MPEG-TS with the stored fragment's
// frames, codecs and first timestamps (those of the fMP4 segment of the same fragment, modulo
// 2^33), and the whole session read by ffprobe and decoded by ffmpeg: every stored frame, no
// error. The session was InvalidArgumentException ("ContainerFormat MPEG_TS is not supported").
func TestHLSMPEGTS(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg and ffprobe
	for _, tc := range []struct {
		clip   string
		codecs []string
	}{
		{"h264_aac.mkv", []string{"h264", "aac"}},
		{"h265.mkv", []string{"hevc"}},
	} {
		t.Run(tc.clip, func(t *testing.T) {
			t.Parallel()
			e := newMediaEnv(t, "fs")
			e.createStream(t, "cam", 24)
			c := loadClip(t, tc.clip)
			uploadClip(t, e, "cam", tc.clip, seq(len(c.frags))...)
			url := tsSession(t, e, "MPEG_TS")
			master, media := mediaPlaylist(t, url)
			if !strings.Contains(master, "#EXT-X-VERSION:3\n") || !strings.Contains(master, `CODECS="`) {
				t.Errorf("master playlist:\n%s", master)
			}
			segs := segmentURI.FindAllStringSubmatch(media, -1)
			if len(segs) != len(c.frags) || strings.Contains(media, "EXT-X-MAP") || strings.Contains(media, ".mp4") ||
				!strings.Contains(media, "#EXT-X-VERSION:3\n") || !strings.Contains(media, "#EXT-X-ENDLIST") {
				t.Fatalf("media playlist:\n%s", media)
			}
			_, mp4Media := mediaPlaylist(t, tsSession(t, e, "FRAGMENTED_MP4"))
			mp4Segs := segmentURI.FindAllStringSubmatch(mp4Media, -1)
			initURI := regexp.MustCompile(`URI="([^"]+)"`).FindStringSubmatch(mp4Media)
			base := url[:strings.LastIndex(url, "/")+1]
			_, _, init := httpGet(t, base+initURI[1])

			for _, i := range []int{0, len(c.frags) - 1} {
				code, hdr, seg := httpGet(t, base+segs[i][1])
				if code != 200 || hdr.Get("Content-Type") != "video/mp2t" || len(seg)%188 != 0 || seg[0] != 0x47 {
					t.Fatalf("segment %d: %d %s, %d bytes", i, code, hdr.Get("Content-Type"), len(seg))
				}
				got := probeFile(t, "seg.ts", seg)
				_, _, m := httpGet(t, base+mp4Segs[i][1])
				mp4 := probeFile(t, "seg.mp4", append(append([]byte(nil), init...), m...))
				want := map[uint64]int{}
				for _, fr := range c.frags[i] {
					want[fr.Track]++
				}
				if len(got) != len(tc.codecs) || len(mp4) != len(got) {
					t.Fatalf("segment %d: streams %+v, want %v (fMP4: %+v)", i, got, tc.codecs, mp4)
				}
				for k, s := range got {
					n := want[c.tracks[k].Number]
					if s.CodecName != tc.codecs[k] || s.NbReadFrames != fmt.Sprint(n) {
						t.Errorf("segment %d stream %d: %s, %s frames; want %s, %d frames (the stored fragment's)", i, k, s.CodecName, s.NbReadFrames, tc.codecs[k], n)
					}
					if d := s.on90k(t) - mp4[k].on90k(t); d < -1 || d > 1 {
						t.Errorf("segment %d stream %d: starts at %d (90 kHz), the fMP4 segment at %d modulo 2^33 (%d %s)",
							i, k, s.on90k(t), mp4[k].on90k(t), mp4[k].StartPTS, mp4[k].TimeBase)
					}
				}
			}

			// The whole session, as a player reads it: every frame, decoded without a word.
			if got, want := ffprobeStreams(t, url), wantStreams(t, tc.clip, 1); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ffprobe of the MPEG_TS session:\n got %+v\nwant %+v", got, want)
			}
			cmd := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffmpeg"), "-nostdin", "-v", "error", "-i", url, "-f", "null", "-")
			if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("ffmpeg decoding the MPEG_TS session: %v\n%s", err, out)
			}
		})
	}
}

// TestHLSMPEGTSErrors: getTSFragment.ts answers as getMP4MediaFragment.mp4 does for a fragment
// that is not there or not in the session, an expired or unknown token and a deleted stream; a
// stream MPEG-TS cannot carry is refused at session creation, with fMP4's error types.
func TestHLSMPEGTSErrors(t *testing.T) {
	t.Parallel()
	clock := &setClock{}
	clock.Set(time.Now())
	e := newMediaEnv(t, "mem", func(c *Config) { c.Now = clock.Now })
	arn := e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(3)...)
	e.createStream(t, "vp8", 24)
	uploadClip(t, e, "vp8", "webm_vp8.webm", 0)
	vp8 := onDemandHour("vp8", "HLSFragmentSelector")
	vp8["ContainerFormat"] = "MPEG_TS"
	if _, code := e.hlsURL(t, vp8); code != "UnsupportedStreamMediaTypeException" {
		t.Errorf("VP8 over MPEG_TS: %q, want UnsupportedStreamMediaTypeException", code)
	}

	url := tsSession(t, e, "MPEG_TS")
	base, tok := url[:strings.LastIndex(url, "/")+1], url[strings.Index(url, "SessionToken=")+len("SessionToken="):]
	check := func(what, path string, wantCode int, wantType string) {
		t.Helper()
		resp := httpOpen(t, base+path)
		resp.Body.Close()
		if resp.StatusCode != wantCode || resp.Header.Get("x-amzn-ErrorType") != wantType {
			t.Errorf("%s: %d %q, want %d %q", what, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), wantCode, wantType)
		}
	}
	for _, seg := range []string{"getTSFragment.ts", "getMP4MediaFragment.mp4"} {
		check(seg+" of fragment 1", seg+"?SessionToken="+tok+"&FragmentNumber="+formatFragmentNumber(1), 200, "")
		check(seg+" of a fragment not stored", seg+"?SessionToken="+tok+"&FragmentNumber="+formatFragmentNumber(99), 404, codeResourceNotFound)
		check(seg+" without FragmentNumber", seg+"?SessionToken="+tok, 400, codeInvalidArgument)
		check(seg+" of an unknown token", seg+"?SessionToken=nope&FragmentNumber=1", 404, codeResourceNotFound)
	}
	clock.Add(301 * time.Second) // past the default Expires
	check("getTSFragment.ts after expiry", "getTSFragment.ts?SessionToken="+tok+"&FragmentNumber="+formatFragmentNumber(1), 403, codeNotAuthorized)
	clock.Add(-301 * time.Second)
	e.deleteStream(t, arn)
	check("getTSFragment.ts of a deleted stream", "getTSFragment.ts?SessionToken="+tok+"&FragmentNumber="+formatFragmentNumber(1), 404, codeResourceNotFound)
}

// TestHLSMPEGTSLive: ffmpeg plays a LIVE MPEG_TS session while the producer sends, as
// TestHLSLive does with fMP4.
func TestHLSMPEGTSLive(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	pc, c, base := startLive(t, e)
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "MaxMediaPlaylistFragmentResults": 3, "ContainerFormat": "MPEG_TS"})
	if code != "" {
		t.Fatal(code)
	}
	if _, media := mediaPlaylist(t, url); strings.Count(media, "getTSFragment.ts?") != 2 || strings.Contains(media, "EXT-X-MAP") {
		t.Fatalf("first media playlist:\n%s", media)
	}
	if sent := playLive(t, url, pc, c, base, 2); sent < 8 {
		t.Errorf("only %d fragments were produced while ffmpeg played 7 s", sent)
	}
}

// TestHLSMPEGTSWrap plays an ON_DEMAND MPEG_TS session whose producer timestamps cross one of the
// instants where the 33-bit MPEG-TS clock wraps (mkv/mpegts/doc.go): the segment before it starts
// near 2^33, the one after near 0, and ffmpeg reads the session as a player does, every stored
// frame, decode times rising with no jump, without a word at -v warning.
func TestHLSMPEGTSWrap(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg and ffprobe
	const name = "h264_aac.mkv"
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, name)
	// The first wrap after baseMillis, 2 s into the 4 s clip.
	period := new(big.Int).Lsh(big.NewInt(1), 33) // 90 kHz ticks
	wrap := new(big.Int).Mul(big.NewInt(baseMillis), big.NewInt(90))
	wrap.Div(wrap, period).Add(wrap, big.NewInt(1)).Mul(wrap, period).Div(wrap, big.NewInt(90)) // ms
	base := wrap.Int64() - 2000
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	for i := range c.frags {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	pc.end()
	url, code := e.hlsURL(t, map[string]any{"StreamName": "cam", "PlaybackMode": "ON_DEMAND", "ContainerFormat": "MPEG_TS",
		"HLSFragmentSelector": map[string]any{"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": base/1000 - 10, "EndTimestamp": base/1000 + 60}}})
	if code != "" {
		t.Fatal(code)
	}
	_, media := mediaPlaylist(t, url)
	segs := segmentURI.FindAllStringSubmatch(media, -1)
	base0 := url[:strings.LastIndex(url, "/")+1]
	var starts []int64
	for _, s := range segs {
		_, _, seg := httpGet(t, base0+s[1])
		starts = append(starts, probeFile(t, "seg.ts", seg)[0].on90k(t))
	}
	wrapped := false
	for i := 1; i < len(starts); i++ {
		wrapped = wrapped || (starts[i-1] > 1<<33-10*90000 && starts[i] < 10*90000)
	}
	if len(segs) != len(c.frags) || !wrapped {
		t.Fatalf("%d segments starting at %v (90 kHz): want %d, one of them across the wrap", len(segs), starts, len(c.frags))
	}

	if got, want := ffprobeStreams(t, url), wantStreams(t, name, 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ffprobe of the MPEG_TS session:\n got %+v\nwant %+v", got, want)
	}
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	if out, err := exec.CommandContext(t.Context(), ffmpeg, "-nostdin", "-v", "warning", "-i", url, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("ffmpeg decoding the MPEG_TS session: %v\n%s", err, out)
	}
	// The decode times as ffmpeg's HLS reader hands them on (it unwraps the clock).
	out, err := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffprobe"), "-v", "error", "-select_streams", "v",
		"-show_entries", "packet=dts", "-of", "csv=p=0", url).Output()
	if err != nil {
		t.Fatal(err)
	}
	var prev int64 = -1
	for _, line := range strings.Fields(string(out)) {
		var dts int64
		if _, err := fmt.Sscan(line, &dts); err != nil {
			t.Fatalf("ffprobe dts %q", line)
		}
		if prev >= 0 && (dts <= prev || dts-prev > 90000/2) {
			t.Errorf("video decode time %d after %d", dts, prev)
		}
		prev = dts
	}
}

// TestHLSMPEGTSGStreamer plays ON_DEMAND sessions with GStreamer, its video sink synchronised to
// the pipeline clock as a viewer's is: every stored picture is shown and the pipeline ends.
// MPEG_TS with playbin (the older hlsdemux) and FRAGMENTED_MP4 with playbin3 (hlsdemux2), the
// pairs README recommends: GStreamer 1.22's hlsdemux shows nothing of a FRAGMENTED_MP4 session
// (it starts the clock at 0 and then waits for the segments' epoch-based times).
func TestHLSMPEGTSGStreamer(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // GStreamer plays 4 s of media in real time, twice
	gst := testutil.NeedTool(t, "gst-launch-1.0")
	for _, plugin := range []string{"hlsdemux", "hlsdemux2", "tsdemux", "avdec_h264"} {
		if exec.Command(testutil.NeedTool(t, "gst-inspect-1.0"), plugin).Run() != nil {
			testutil.Missing(t, "GStreamer's "+plugin+" is not installed (gstreamer1.0-plugins-good, -bad, gstreamer1.0-libav)")
		}
	}
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	uploadClip(t, e, "cam", "h264.mkv", seq(len(c.frags))...)
	pictures := 0
	for _, frags := range c.frags {
		pictures += len(frags)
	}
	for _, tc := range []struct{ container, playbin string }{{"MPEG_TS", "playbin"}, {"FRAGMENTED_MP4", "playbin3"}} {
		t.Run(tc.container, func(t *testing.T) {
			t.Parallel()
			url := tsSession(t, e, tc.container)
			yuv := filepath.Join(t.TempDir(), "v.yuv")
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, gst, "-q", tc.playbin, "uri="+url, "audio-sink=fakesink",
				"video-sink=videoconvert ! video/x-raw,format=I420 ! filesink sync=true location="+yuv)
			testutil.DieWithTest(cmd)
			out, err := cmd.CombinedOutput()
			fi, statErr := os.Stat(yuv)
			if err != nil || statErr != nil || len(out) > 0 {
				t.Fatalf("gst-launch-1.0 %s on %s: %v %v\n%s", tc.playbin, url, err, statErr, out)
			}
			const picture = 320 * 240 * 3 / 2 // I420
			if got := fi.Size() / picture; got != int64(pictures) {
				t.Errorf("GStreamer %s showed %d pictures, want the %d stored", tc.playbin, got, pictures)
			}
		})
	}
}
