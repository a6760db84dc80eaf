package capture_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/mkv"
)

// Cut a clip into 1-second fragments and write each as a self-contained MKV document.
func ExampleFragmenter() {
	ctx := context.Background()
	file, err := os.Open("../testdata/h264.mkv")
	if err != nil {
		fmt.Println(err)
		return
	}
	src, err := capture.Open(ctx, file, file.Name(), capture.Options{}) // src closes file
	if err != nil {
		file.Close()
		fmt.Println(err)
		return
	}
	fr, err := capture.NewFragmenter(src, capture.FragmenterConfig{TargetDuration: time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer fr.Close()
	var out []byte
	for {
		f, err := fr.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("fragment at %d ms: %d frames, first is a keyframe: %v\n", f.Timecode, len(f.Frames), f.Frames[0].Keyframe)
		if out, err = mkv.AppendFragment(out, f); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Output:
	// fragment at 0 ms: 25 frames, first is a keyframe: true
	// fragment at 1000 ms: 25 frames, first is a keyframe: true
	// fragment at 2000 ms: 25 frames, first is a keyframe: true
	// fragment at 3000 ms: 25 frames, first is a keyframe: true
}
