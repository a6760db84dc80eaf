package server

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/openkvs/kvs/internal/decode/decodetest"
)

// TestGetImagesAWSCLI drives GetImages with the real AWS CLI v2 (`aws kinesis-video-archived-media
// get-images`, pages of 2 that the CLI follows itself) over a stream with a gap: the right number
// of images at the right timestamps, NO_MEDIA in the gap, every image a JPEG (ffprobe) of the size
// asked for showing the keyframe at or before its sample; then the request errors as the CLI
// reports them.
func TestGetImagesAWSCLI(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: starts the AWS CLI 6 times")
	}
	testutil.NeedTool(t, "ffprobe") // before the server starts, for a clear skip
	e := newMediaEnv(t, "fs")
	withGap(t, e, "cam")
	e.createStream(t, "live", 0)
	cli := testutil.NewAWSCLI(t, e.ts.URL)
	start := strconv.FormatInt(baseMillis/1000, 10)
	end := strconv.FormatInt(baseMillis/1000+12, 10)

	var out struct {
		Images []struct {
			TimeStamp    string
			Error        string
			ImageContent string
		}
		NextToken string
	}
	cli.OK(&out, "kinesis-video-archived-media", "get-images", "--stream-name", "cam", "--image-selector-type", "PRODUCER_TIMESTAMP",
		"--start-timestamp", start, "--end-timestamp", end, "--sampling-interval", "3000", "--format", "JPEG",
		"--format-config", "JPEGQuality=85", "--width-pixels", "200", "--height-pixels", "150", "--page-size", "2")
	if len(out.Images) != 5 || out.NextToken != "" {
		t.Fatalf("%d images, NextToken %q; want 5 images (samples at 0, 3, 6, 9, 12 s) and no token", len(out.Images), out.NextToken)
	}
	ref := decodetest.ReferenceFrames(t, "../testdata/h264.mkv", 200, 150)
	dir := t.TempDir()
	var im decodetest.Images // ffprobe reads the first image; imagePicture decodes each with Go's image/jpeg
	for i, img := range out.Images {
		ms := int64(i) * 3000
		ts, err := time.Parse(time.RFC3339, img.TimeStamp)
		if want := imagesBase.Add(time.Duration(ms) * time.Millisecond); err != nil || !ts.Equal(want) {
			t.Errorf("image %d: TimeStamp %q, want %v", i, img.TimeStamp, want.UTC())
		}
		frame, covered := clipFrame(ms, true)
		if !covered {
			if img.Error != "NO_MEDIA" || img.ImageContent != "" {
				t.Errorf("image %d at +%d ms: %q, want NO_MEDIA", i, ms, img.Error)
			}
			continue
		}
		b, err := base64.StdEncoding.DecodeString(img.ImageContent)
		if err != nil || img.Error != "" {
			t.Fatalf("image %d: error %q, content: %v", i, img.Error, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("image-%d.jpg", i))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if codec, w, h := im.Probe(t, path); codec != "mjpeg" || w != 200 || h != 150 {
			t.Errorf("image %d: ffprobe (or Go after the first) reads %s %dx%d, want mjpeg 200x150", i, codec, w, h)
		}
		if got := decodetest.Closest(imagePicture(t, img.ImageContent, "JPEG", 200, 150), ref); got != frame {
			t.Errorf("image %d at +%d ms shows clip frame %d, want %d", i, ms, got, frame)
		}
	}

	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"no stream", "ResourceNotFoundException", []string{"--stream-name", "missing"}},
		{"range over 300 s", "InvalidArgumentException", []string{"--stream-name", "cam", "--end-timestamp", strconv.FormatInt(baseMillis/1000+301, 10)}},
		{"width alone", "InvalidArgumentException", []string{"--stream-name", "cam", "--width-pixels", "100"}},
		{"no retention", "NoDataRetentionException", []string{"--stream-name", "live"}},
		{"quality 101", "InvalidArgumentException", []string{"--stream-name", "cam", "--format-config", "JPEGQuality=101"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"kinesis-video-archived-media", "get-images", "--image-selector-type", "PRODUCER_TIMESTAMP", "--start-timestamp", start,
				"--end-timestamp", end, "--sampling-interval", "3000", "--format", "PNG"}, tc.args...)
			cli.For(t).Fails(tc.want, args...)
		})
	}
}
