package mpegts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
)

// clipFragments reads the clusters of a testdata clip as fragments.
func clipFragments(t testing.TB, clip string) []*mkv.Fragment {
	t.Helper()
	if !filepath.IsAbs(clip) {
		clip = filepath.Join("..", "..", "testdata", clip)
	}
	fh, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fr := mkv.NewFragmentReader(fh)
	var out []*mkv.Fragment
	for {
		f, err := fr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
}

// clipBase is where the test clips' fragments are placed: producer time since the epoch, past
// many wraps of the 33-bit clock.
const clipBase = 1_700_000_000 * time.Second

// segments remuxes every fragment of clip into an MPEG-TS segment and a fMP4 media segment, each
// placed at clipBase plus its cluster timecode (milliseconds), after the fragment before it.
func segments(t *testing.T, clip string) (frags []*mkv.Fragment, ts, mp4 [][]byte, starts []time.Duration) {
	t.Helper()
	frags = clipFragments(t, clip)
	for i, f := range frags {
		start := clipBase + time.Duration(f.Timecode)*time.Millisecond
		var prev *mkv.Fragment
		var prevStart time.Duration
		if i > 0 {
			prev, prevStart = frags[i-1], starts[i-1]
		}
		seg, err := AppendSegment(nil, f, start, prev, prevStart)
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		m, err := fmp4.AppendSegmentAfter(nil, uint32(i+1), f, 0, start, prev, prevStart)
		if err != nil {
			t.Fatal(err)
		}
		ts, mp4, starts = append(ts, seg), append(mp4, m), append(starts, start)
	}
	return frags, ts, mp4, starts
}

type probeStream struct {
	CodecName    string `json:"codec_name"`
	NbReadFrames string `json:"nb_read_frames"`
	StartPTS     int64  `json:"start_pts"`
}

// probe runs ffprobe on path and returns its streams (frames counted) and its stderr.
func probe(t *testing.T, path string, args ...string) ([]probeStream, string) {
	t.Helper()
	args = append([]string{"-v", "error", "-count_frames", "-show_streams", "-of", "json"}, args...)
	cmd := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffprobe"), append(args, path)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, stderr.String())
	}
	var res struct{ Streams []probeStream }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res.Streams, stderr.String()
}

// TestSegmentsPlay remuxes each clip fragment by fragment and has ffprobe read each segment alone
// (codecs, frames, first timestamp: the fMP4 one modulo 2^33) and the segments as one VOD
// playlist, as an HLS player does: every frame, decoded without a complaint.
func TestSegmentsPlay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		clip   string
		codecs []string
	}{
		{"h264.mkv", []string{"h264"}},
		{"h264_aac.mkv", []string{"h264", "aac"}},
		{"h265.mkv", []string{"hevc"}},
	} {
		t.Run(tc.clip, func(t *testing.T) {
			t.Parallel()
			frags, ts, _, starts := segments(t, tc.clip)
			dir := t.TempDir()
			var playlist strings.Builder
			playlist.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n")
			total := map[string]int{}
			for i, seg := range ts {
				name := fmt.Sprintf("%d.ts", i)
				path := filepath.Join(dir, name)
				if err := os.WriteFile(path, seg, 0o600); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&playlist, "#EXTINF:1.000,\n%s\n", name)
				got, stderr := probe(t, path)
				if stderr != "" {
					t.Errorf("segment %d: ffprobe said:\n%s", i, stderr)
				}
				want := map[uint64]int{}
				for _, fr := range frags[i].Frames {
					want[fr.Track]++
				}
				times, err := fmp4.Times(frags[i], starts[i], nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.codecs) {
					t.Fatalf("segment %d: streams %+v, want %v", i, got, tc.codecs)
				}
				for k, s := range got {
					track := frags[i].Tracks[k]
					if s.CodecName != tc.codecs[k] || s.NbReadFrames != fmt.Sprint(want[track.Number]) {
						t.Errorf("segment %d stream %d: %s with %s frames, want %s with %d", i, k, s.CodecName, s.NbReadFrames, tc.codecs[k], want[track.Number])
					}
					total[s.CodecName] += want[track.Number]
					// The stream's first presentation time is its fMP4 one on the 90 kHz clock, modulo 2^33.
					first := int64(-1)
					for _, ft := range times {
						if ft.Track == track.Number && (first < 0 || to90k(ft.PTS, ft.Timescale) < first) {
							first = to90k(ft.PTS, ft.Timescale)
						}
					}
					if s.StartPTS != first&clockMask {
						t.Errorf("segment %d stream %d: start_pts %d, want %d (fMP4 %d modulo 2^33)", i, k, s.StartPTS, first&clockMask, first)
					}
				}
			}
			playlist.WriteString("#EXT-X-ENDLIST\n")
			m3u8 := filepath.Join(dir, "index.m3u8")
			if err := os.WriteFile(m3u8, []byte(playlist.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			got, stderr := probe(t, m3u8)
			if stderr != "" {
				t.Errorf("playlist: ffprobe said:\n%s", stderr)
			}
			for _, s := range got {
				if s.NbReadFrames != fmt.Sprint(total[s.CodecName]) {
					t.Errorf("playlist: %s has %s frames, want %d", s.CodecName, s.NbReadFrames, total[s.CodecName])
				}
			}
			// Decoded whole, as a player does, with warnings reported: a continuity counter out of
			// sequence where one segment follows another is "corrupt input packet" (continuity.go).
			cmd := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffmpeg"), "-nostdin", "-v", "warning",
				"-allowed_extensions", "ALL", "-i", m3u8, "-f", "null", "-")
			if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("ffmpeg decoding the playlist: %v\n%s", err, out)
			}
		})
	}
}

// TestOverhead reports what MPEG-TS costs over fMP4 for the same fragments (README): the TS
// segments' bytes over the fMP4 media segments'. Most of it is per frame (PES header, access unit
// delimiter, the stuffing of the frame's last 188-byte packet: about 130 bytes), the rest per
// segment (up to 15 packets a track, continuity.go), so it shrinks as frames and fragments grow:
// the golden clips' 300-byte frames and 10-40 KB fragments pay 30-75%, a 720p camera at 2 Mbit/s
// (made here with ffmpeg) a few percent.
func TestOverhead(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // encodes a clip
	cam := filepath.Join(t.TempDir(), "cam.mkv")
	cmd := exec.CommandContext(t.Context(), testutil.NeedTool(t, "ffmpeg"), "-nostdin", "-v", "error",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "2M", "-g", "25", "-c:a", "aac", "-b:a", "128k",
		"-cluster_time_limit", "1000", cam)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	for _, clip := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv", cam} {
		_, ts, mp4, _ := segments(t, clip)
		var nts, nmp4 int
		for i := range ts {
			nts += len(ts[i])
			nmp4 += len(mp4[i])
		}
		overhead := float64(nts)/float64(nmp4) - 1
		t.Logf("%s: MPEG-TS %d bytes, fMP4 media segments %d bytes: +%.1f%%", filepath.Base(clip), nts, nmp4, 100*overhead)
		if limit := map[bool]float64{true: 0.1, false: 0.8}[clip == cam]; overhead < 0 || overhead > limit {
			t.Errorf("%s: overhead %.1f%%, want 0-%.0f%%", clip, 100*overhead, 100*limit)
		}
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tracks := clipFragments(t, "h264_aac.mkv")[0].Tracks
	if err := Check(tracks); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		private []byte
		want    error
	}{
		// AAC LC, explicit sampling rate 50000 Hz (index 15), stereo: valid, but not in ADTS's table.
		{"explicit rate", []byte{0x17, 0x80, 0x61, 0xA8, 0x10}, ErrNotADTS},
		// AAC LC 48 kHz stereo with 960-sample frames.
		{"960 frames", []byte{0x11, 0x94}, ErrNotADTS},
		{"not a config", []byte{0xFF}, fmp4.ErrInvalidCodecPrivate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := append([]mkv.Track(nil), tracks...)
			tr[1].CodecPrivate = tc.private
			err := Check(tr)
			var te *fmp4.TrackError
			if !errors.Is(err, tc.want) || !errors.As(err, &te) || te.Track != tr[1].Number {
				t.Fatalf("Check: %v, want %v in a TrackError of track %d", err, tc.want, tr[1].Number)
			}
			if tc.want == ErrNotADTS && !errors.Is(err, fmp4.ErrUnsupportedCodec) {
				t.Errorf("Check: %v, want fmp4.ErrUnsupportedCodec too", err)
			}
		})
	}
}

// TestContinuityAcrossSegments reads each clip's segments one after the other, as an HLS player
// does, and wants every elementary stream's continuity counter in sequence throughout, so that no
// demuxer takes a packet for lost at a segment's start; the PES bytes must be those of a segment
// written without the packets that keep the counters (continuity.go).
func TestContinuityAcrossSegments(t *testing.T) {
	t.Parallel()
	for _, clip := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv"} {
		t.Run(clip, func(t *testing.T) {
			t.Parallel()
			_, ts, _, _ := segments(t, clip)
			last := map[uint16]byte{}
			es := map[uint16]bool{} // PIDs seen starting a PES
			for i, seg := range ts {
				if len(seg)%packetSize != 0 {
					t.Fatalf("segment %d: %d bytes, not whole packets", i, len(seg))
				}
				for off := 0; off < len(seg); off += packetSize {
					p := seg[off : off+packetSize]
					info := parsePacket(p)
					if p[0] != 0x47 {
						t.Fatalf("segment %d, packet %d: no sync byte", i, off/packetSize)
					}
					if info.payload == 0 || (!es[info.pid] && !isPESStart(p, info)) {
						continue // the PAT and PMT start again in each segment
					}
					es[info.pid] = true
					cc := p[3] & 15
					if prev, ok := last[info.pid]; ok && cc != (prev+1)&15 {
						t.Fatalf("segment %d, packet %d (PID %d): continuity counter %d after %d", i, off/packetSize, info.pid, cc, prev)
					}
					last[info.pid] = cc
				}
			}
			if len(last) == 0 {
				t.Fatal("no elementary stream packets")
			}
		})
	}
}

// TestSpreadKeepsPES re-reads the PES payloads of a padded segment and of its packets as the
// writer made them: the same bytes, stream by stream.
func TestSpreadKeepsPES(t *testing.T) {
	t.Parallel()
	frags := clipFragments(t, "h264_aac.mkv")
	start := clipBase + time.Duration(frags[0].Timecode)*time.Millisecond
	seg, err := AppendSegment(nil, frags[0], start, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	payloads := func(b []byte) map[uint16][]byte {
		out := map[uint16][]byte{}
		for off := 0; off+packetSize <= len(b); off += packetSize {
			if info := parsePacket(b[off : off+packetSize]); info.payload > 0 && info.pid != 0 && info.pid != 4096 { // not the PAT or PMT
				out[info.pid] = append(out[info.pid], b[off+info.payload:off+packetSize]...)
			}
		}
		return out
	}
	got := payloads(seg)
	raw, err := appendPackets(nil, frags[0], start, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(seg) == len(raw) {
		t.Fatalf("segment of %d packets: none added (a 1-in-16 chance per track; pick another fragment)", len(raw)/packetSize)
	}
	want := payloads(raw)
	for pid, w := range want {
		if !bytes.Equal(got[pid], w) {
			t.Errorf("PID %d: %d payload bytes after padding, %d as written (or different bytes)", pid, len(got[pid]), len(w))
		}
	}
}
