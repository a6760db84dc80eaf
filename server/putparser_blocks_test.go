package server

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/openkvs/kvs/mkv"
)

// PutMedia stores each kind of block a producer may send: a SimpleBlock of one frame (read straight
// into the fragment's chunk), one with the invisible bit (the flag is not kept: the stored block
// says keyframe or not, as before), a Xiph-laced SimpleBlock of two audio frames and a BlockGroup
// with a BlockDuration (both split into frames and copied). The stored fragment holds the body's
// frames, byte for byte, on both stores.
func TestPutMediaBlockKinds(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264_aac.mkv")
	var video, audio uint64
	for _, tr := range c.tracks {
		switch tr.Type {
		case mkv.TrackTypeVideo:
			video = tr.Number
		case mkv.TrackTypeAudio:
			audio = tr.Number
		}
	}
	if video == 0 || audio == 0 || video > 126 || audio > 126 {
		t.Fatalf("clip tracks %+v: want one video and one audio track numbered below 127", c.tracks)
	}
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	key, delta, inGroup := pattern(3000, 1), pattern(900, 2), pattern(700, 3)
	aac1, aac2 := pattern(300, 4), pattern(200, 5)
	// simpleBlock is a SimpleBlock element: track, timecode relative to the cluster, flags, data.
	simpleBlock := func(b []byte, track uint64, rel int16, flags byte, data ...[]byte) []byte {
		var payload []byte
		payload = append(payload, 0x80|byte(track), byte(uint16(rel)>>8), byte(rel), flags)
		if len(data) == 2 { // Xiph lacing: the frame count less one, the first frame's size
			payload = append(payload, 1)
			for n := len(data[0]); ; n -= 255 {
				if n < 255 {
					payload = append(payload, byte(n))
					break
				}
				payload = append(payload, 255)
			}
		}
		for _, d := range data {
			payload = append(payload, d...)
		}
		return append(mkv.AppendElementHeader(b, mkv.IDSimpleBlock, int64(len(payload))), payload...)
	}
	tc := int64(baseMillis)
	var frames []byte
	frames = simpleBlock(frames, video, 0, 0x80|0x08, key)        // keyframe, invisible bit
	frames = simpleBlock(frames, audio, 5, 0x80|0x02, aac1, aac2) // Xiph-laced
	frames, err := mkv.AppendClusterFrame(frames, tc, &mkv.Frame{Track: video, Timecode: tc + 33, Duration: 33, Data: inGroup})
	if err != nil {
		t.Fatal(err)
	}
	frames = simpleBlock(frames, video, 66, 0, delta)
	cluster := append(mkv.AppendClusterHeader(nil, tc, int64(len(frames))), frames...)
	body := append(c.header(), cluster...)
	want := clusterFrames(body)[tc]
	if n := bytes.Count([]byte(want), []byte("\n")); n != 5 {
		t.Fatalf("the body's cluster reads as %d frames, want 5:\n%s", n, want)
	}

	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			e.createStream(t, "cam", 1)
			pc := e.startPut(t, "cam")
			if pc.status != 200 {
				t.Fatalf("put media: %d %s", pc.status, pc.errTyp)
			}
			pc.write(c.header())
			n := pc.fragment(cluster, tc, true)
			pc.end()
			rc, _, err := e.store.Open(context.Background(), "cam", n)
			if err != nil {
				t.Fatal(err)
			}
			chunk, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := clusterFrames(chunk)[tc]; got != want {
				t.Fatalf("stored frames:\n%s\nthe body's:\n%s", got, want)
			}
			// The keyframe read in place: its flags byte, right before its data, says keyframe only.
			i := bytes.Index(chunk, key)
			if i < 1 || chunk[i-1] != 0x80 {
				t.Fatalf("stored keyframe flags %#x, want 0x80 (the invisible bit dropped)", chunk[max(i-1, 0)])
			}
		})
	}
}
