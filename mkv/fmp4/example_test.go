package fmp4_test

import (
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
)

// Remux a GetMedia-style stream of fragments into an HLS-ready init segment and media segments.
func Example() {
	fh, err := os.Open("../../testdata/concatenated.mkv")
	if err != nil {
		log.Fatal(err)
	}
	defer fh.Close()
	fr := mkv.NewFragmentReader(fh)
	base := 1_700_000_000 * time.Second // the fragments' producer time since the epoch
	for seq := uint32(1); ; seq++ {
		f, err := fr.Next()
		if err != nil {
			break // io.EOF
		}
		if seq == 1 {
			m, err := fmp4.Describe(f.Tracks)
			if err != nil {
				log.Fatal(err)
			}
			init, err := fmp4.NewInit(f.Tracks)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("codecs %s, %dx%d, init segment %d bytes\n", strings.Join(m.Codecs, ","), m.Width, m.Height, len(init))
		}
		start := base + time.Duration(f.Timecode)*time.Millisecond
		seg, err := fmp4.AppendMediaSegment(nil, seq, f, start)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("segment %d: %d frames, %s box first\n", seq, len(f.Frames), seg[4:8])
	}
	// Output:
	// codecs avc1.64000D, 320x240, init segment 678 bytes
	// segment 1: 25 frames, moof box first
	// segment 2: 25 frames, moof box first
	// segment 3: 25 frames, moof box first
	// segment 4: 25 frames, moof box first
}
