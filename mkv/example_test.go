package mkv_test

import (
	"bytes"
	"fmt"
	"io"
	"log"

	"github.com/openkvs/kvs/mkv"
)

// A GetMedia-style chunk written with AppendFragment and read back, first fragment by fragment,
// then event by event.
func Example() {
	f := &mkv.Fragment{
		Tracks:   []mkv.Track{{Number: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", Width: 640, Height: 480}},
		Tags:     []mkv.SimpleTag{{Name: mkv.TagFragmentNumber, Value: "91343852333181432392682062607743920146159169392"}},
		Timecode: 1_511_852_109_126, // ms since the epoch, with the default TimecodeScale
		Frames: []mkv.Frame{
			{Track: 1, Timecode: 1_511_852_109_126, Keyframe: true, Data: []byte("idr")},
			{Track: 1, Timecode: 1_511_852_109_159, Data: []byte("p")},
		},
		TrailingTags: []mkv.SimpleTag{{Name: mkv.TagContinuationToken, Value: "91343852333181432392682062607743920146159169392"}},
	}
	chunk, err := mkv.AppendFragment(nil, f)
	if err != nil {
		log.Fatal(err)
	}
	stream := append(chunk, chunk...) // GetMedia concatenates chunks

	fr := mkv.NewFragmentReader(bytes.NewReader(stream))
	for {
		frag, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		n, _ := frag.Tag(mkv.TagFragmentNumber)
		fmt.Printf("fragment %s…: %d frames, %d ms\n", n[:6], len(frag.Frames), frag.Duration())
	}

	r := mkv.NewReader(bytes.NewReader(chunk))
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case mkv.EventCluster:
			fmt.Println("cluster at", ev.Timecode)
		case mkv.EventFrame:
			fmt.Printf("  frame %q at +%d keyframe=%v\n", ev.Frame.Data, ev.Frame.Timecode-f.Timecode, ev.Frame.Keyframe)
		default:
			fmt.Println(ev.Kind)
		}
	}
	// Output:
	// fragment 913438…: 2 frames, 66 ms
	// fragment 913438…: 2 frames, 66 ms
	// EBMLHeader
	// Segment
	// Info
	// Tracks
	// Tags
	// cluster at 1511852109126
	//   frame "idr" at +0 keyframe=true
	//   frame "p" at +33 keyframe=false
	// ClusterEnd
	// Tags
}
