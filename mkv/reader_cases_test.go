package mkv

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"testing"
)

// A laced Block in a BlockGroup with a BlockDuration and no DefaultDuration: the frames share the
// duration (as the Reader already says: d32 each) and follow one another, as ffprobe reads them
// (pts 1000, 1032, 1064).
func TestReaderLacedBlockGroupTimecodes(t *testing.T) {
	tracks := []Track{{Number: 1, Type: 0x11, CodecID: "S_TEXT/UTF8"}} // no DefaultDuration
	in := cat(docStart(true), AppendInfo(nil, DefaultTimecodeScale, "t"), AppendTracks(nil, tracks),
		elem(IDCluster, uintElem(IDTimecode, 1000),
			elem(IDBlockGroup,
				elem(IDBlock, block(1, 0, 0x02, 2, 3, 3, 'A', 'A', 'A', 'B', 'B', 'B', 'C', 'C', 'C')), // Xiph lacing, 3 frames
				uintElem(IDBlockDuration, 96))))
	got, err := readAll(in)
	if err != io.EOF {
		t.Fatal(err)
	}
	want := []string{"Frame 1@1000K 414141 d32", "Frame 1@1032K 424242 d32", "Frame 1@1064K 434343 d32"}
	if fmt.Sprint(got[5:8]) != fmt.Sprint(want) {
		t.Errorf("frames %q\nwant   %q", got[5:8], want)
	}
}

// A track whose frames are zlib-compressed (ContentEncodings, as mkvmerge --compression 0:zlib
// writes): the Reader must give the frames as coded, or refuse the track; it gives the compressed
// bytes as the frame, and AppendTracks drops the ContentEncodings, so kvs stores undecodable media.
func TestReaderContentEncodingNotIgnored(t *testing.T) {
	frame := bytes.Repeat([]byte("frame data "), 20)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(frame)
	zw.Close()
	const (
		idContentEncodings = 0x6D80
		idContentEncoding  = 0x6240
		idContentComp      = 0x5034
		idContentCompAlgo  = 0x4254
	)
	entry := elem(IDTrackEntry, uintElem(IDTrackNumber, 1), uintElem(IDTrackUID, 1), uintElem(IDTrackType, TrackTypeAudio),
		AppendString(nil, IDCodecID, "A_AC3"),
		elem(idContentEncodings, elem(idContentEncoding, elem(idContentComp, uintElem(idContentCompAlgo, 0)))))
	in := cat(docStart(true), AppendInfo(nil, DefaultTimecodeScale, "t"), elem(IDTracks, entry),
		elem(IDCluster, uintElem(IDTimecode, 0), simpleBlock(1, 0, true, z.Bytes()...)))
	r := NewReader(bytes.NewReader(in))
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("no frame")
			}
			return // refusing the track is fine
		}
		if ev.Kind == EventFrame {
			if !bytes.Equal(ev.Frame.Data, frame) {
				t.Fatalf("frame is %d bytes (the zlib stream as stored), want the %d coded bytes; tracks written back: %x",
					len(ev.Frame.Data), len(frame), AppendTracks(nil, r.Tracks()))
			}
			return
		}
	}
}

// Opus tracks carry a SeekPreRoll (80 ms, as ffmpeg and libwebm write it; the Matroska codec
// mapping for A_OPUS asks for it). A track read and written back (what PutMedia stores and
// GetMedia serves) keeps it.
func TestTracksKeepSeekPreRoll(t *testing.T) {
	const idSeekPreRoll = 0x56BB
	preRoll := uintElem(idSeekPreRoll, 80_000_000)
	entry := elem(IDTrackEntry, uintElem(IDTrackNumber, 1), uintElem(IDTrackUID, 1), uintElem(IDTrackType, TrackTypeAudio),
		AppendString(nil, IDCodecID, "A_OPUS"), uintElem(IDCodecDelay, 6_500_000), preRoll,
		elem(IDAudio, AppendFloat(nil, IDSamplingFreq, 48000), uintElem(IDChannels, 2)))
	in := cat(docStart(true), AppendInfo(nil, DefaultTimecodeScale, "t"), elem(IDTracks, entry))
	r := NewReader(bytes.NewReader(in))
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == EventTracks {
			break
		}
	}
	out := AppendTracks(nil, r.Tracks())
	if !bytes.Contains(out, preRoll) {
		t.Errorf("Tracks written back have no SeekPreRoll: %x", out)
	}
}
