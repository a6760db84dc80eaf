package server

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/jpeg"
	"image/png"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/decodetest"
	"github.com/openkvs/kvs/internal/testutil"
)

// The h264.mkv clip as kvs stores it in these tests: 4 fragments of 1 s (25 frames, a keyframe
// first), looped every 4.06 s (clip.period), producer time from baseMillis. Its frames in
// presentation order are the reference pictures (ffmpeg's own decode).
const clipPeriodMs = 4060

var imagesBase = time.UnixMilli(baseMillis)

// clipFrame returns the clip frame (presentation index) shown at producer offset ms from
// imagesBase, and whether any fragment of fragments 0–3 and 8–11 (loops 0 and 2) covers it, with
// keyframes only or every frame.
func clipFrame(ms int64, keyframes bool) (int, bool) {
	loop, o := ms/clipPeriodMs, ms%clipPeriodMs
	if (loop != 0 && loop != 2) || o > 4000+imageGapTolerance.Milliseconds() {
		return 0, false
	}
	if keyframes {
		return 25 * int(min(o/1000, 3)), true
	}
	return int(min(o/40, 99)), true
}

// withGap uploads fragments 0–3 and 8–11 of h264.mkv to a new stream: media over producer times
// [0, 4.0 s] and [8.12, 12.12 s] after imagesBase, nothing in between.
func withGap(t *testing.T, e *mediaEnv, stream string) {
	e.createStream(t, stream, 24)
	uploadClip(t, e, stream, "h264.mkv", 0, 1, 2, 3, 8, 9, 10, 11)
}

// imagePicture decodes one ImageContent and checks its format and size.
func imagePicture(t *testing.T, content string, format string, w, h int) image.Image {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(content)
	if err != nil {
		t.Fatalf("ImageContent is not base64: %v", err)
	}
	var pic image.Image
	if format == "PNG" {
		pic, err = png.Decode(bytes.NewReader(b))
	} else {
		pic, err = jpeg.Decode(bytes.NewReader(b))
	}
	if err != nil {
		t.Fatalf("ImageContent is not a %s: %v", format, err)
	}
	if r := pic.Bounds(); r.Dx() != w || r.Dy() != h {
		t.Fatalf("image %dx%d, want %dx%d", r.Dx(), r.Dy(), w, h)
	}
	return pic
}

// getAllImages pages through GetImages with the SDK paginator; it returns the images and the
// size of each page.
func getAllImages(t *testing.T, am *kinesisvideoarchivedmedia.Client, in *kinesisvideoarchivedmedia.GetImagesInput) ([]types.Image, []int) {
	t.Helper()
	p := kinesisvideoarchivedmedia.NewGetImagesPaginator(am, in)
	var all []types.Image
	var pages []int
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, out.Images...)
		pages = append(pages, len(out.Images))
		if len(pages) > 100 {
			t.Fatal("more than 100 pages")
		}
	}
	return all, pages
}

// checkImages checks images against samples every interval from imagesBase+from: the count, each
// TimeStamp, NO_MEDIA in the gap, and each picture being the clip frame at or before its sample
// (closest of all the reference frames).
func checkImages(t *testing.T, imgs []types.Image, from, interval int64, keyframes bool, format string, w, h int, ref []*image.Gray, wantCount int) {
	t.Helper()
	if len(imgs) != wantCount {
		t.Fatalf("%d images, want %d", len(imgs), wantCount)
	}
	for i, img := range imgs {
		ms := from + int64(i)*interval
		if want := imagesBase.Add(time.Duration(ms) * time.Millisecond); !aws.ToTime(img.TimeStamp).Equal(want) {
			t.Errorf("image %d: TimeStamp %v, want %v", i, aws.ToTime(img.TimeStamp), want)
		}
		frame, covered := clipFrame(ms, keyframes)
		if !covered {
			if img.Error != types.ImageErrorNoMedia || img.ImageContent != nil {
				t.Errorf("image %d at +%d ms: Error %q with content %v, want NO_MEDIA", i, ms, img.Error, img.ImageContent != nil)
			}
			continue
		}
		if img.Error != "" || img.ImageContent == nil {
			t.Errorf("image %d at +%d ms: Error %q, want an image", i, ms, img.Error)
			continue
		}
		pic := imagePicture(t, aws.ToString(img.ImageContent), format, w, h)
		if got := decodetest.Closest(pic, ref); got != frame {
			t.Errorf("image %d at +%d ms shows clip frame %d, want %d", i, ms, got, frame)
		}
	}
}

// TestGetImagesSDK drives GetImages with aws-sdk-go-v2 and its paginator over a stream with a
// gap: keyframes every second (JPEG, 160x120, pages of 4), then every frame 200 ms apart within a
// GOP (PNG, HeightPixels alone keeping the 4:3 aspect ratio).
func TestGetImagesSDK(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "fs")
	withGap(t, e, "cam")
	am := e.archivedClient()

	t.Run("keyframes", func(t *testing.T) {
		imgs, pages := getAllImages(t, am, &kinesisvideoarchivedmedia.GetImagesInput{
			StreamName: aws.String("cam"), ImageSelectorType: types.ImageSelectorTypeProducerTimestamp,
			StartTimestamp: aws.Time(imagesBase), EndTimestamp: aws.Time(imagesBase.Add(12500 * time.Millisecond)),
			SamplingInterval: aws.Int32(1000), Format: types.FormatJpeg, FormatConfig: map[string]string{"JPEGQuality": "90"},
			WidthPixels: aws.Int32(160), HeightPixels: aws.Int32(120), MaxResults: aws.Int64(4)})
		if len(pages) != 4 || pages[0] != 4 || pages[3] != 1 {
			t.Errorf("pages of %v images, want 4, 4, 4, 1", pages)
		}
		checkImages(t, imgs, 0, 1000, true, "JPEG", 160, 120, decodetest.ReferenceFrames(t, "../testdata/h264.mkv", 160, 120), 13)
	})
	t.Run("every frame", func(t *testing.T) {
		imgs, pages := getAllImages(t, am, &kinesisvideoarchivedmedia.GetImagesInput{
			StreamARN: aws.String(e.describeARN(t, "cam")), ImageSelectorType: types.ImageSelectorTypeProducerTimestamp,
			StartTimestamp: aws.Time(imagesBase.Add(8520 * time.Millisecond)), EndTimestamp: aws.Time(imagesBase.Add(10520 * time.Millisecond)),
			SamplingInterval: aws.Int32(200), Format: types.FormatPng, HeightPixels: aws.Int32(120)})
		if len(pages) != 1 {
			t.Errorf("pages of %v images, want one page (25 by default)", pages)
		}
		checkImages(t, imgs, 8520, 200, false, "PNG", 160, 120, decodetest.ReferenceFrames(t, "../testdata/h264.mkv", 160, 120), 11)
	})
}

// describeARN returns the stream's ARN.
func (e *mediaEnv) describeARN(t *testing.T, name string) string {
	t.Helper()
	var out struct{ StreamInfo struct{ StreamARN string } }
	e.call(t, "/describeStream", map[string]any{"StreamName": name}, &out)
	return out.StreamInfo.StreamARN
}

// TestGetImagesServerTimestamp: SERVER_TIMESTAMP samples land on the fragment received at or
// before them, at the keyframe their offset into it reaches.
func TestGetImagesServerTimestamp(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	testutil.NeedTool(t, "ffmpeg")
	clock := &fakeClock{}
	e := newMediaEnv(t, "mem", func(c *Config) { c.Now = clock.Now })
	e.createStream(t, "cam", 1)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1, 2, 3)
	metas, err := e.store.Range(t.Context(), "cam", 1, 0)
	if err != nil || len(metas) != 4 {
		t.Fatalf("%d fragments stored (%v)", len(metas), err)
	}
	ref := decodetest.ReferenceFrames(t, "../testdata/h264.mkv", 320, 240)
	am := e.archivedClient()
	for i, m := range metas {
		at := m.ServerTime.Add(500 * time.Millisecond)
		out, err := am.GetImages(t.Context(), &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String("cam"),
			ImageSelectorType: types.ImageSelectorTypeServerTimestamp, StartTimestamp: aws.Time(at), EndTimestamp: aws.Time(at),
			SamplingInterval: aws.Int32(3000), Format: types.FormatJpeg})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Images) != 1 || out.NextToken != nil || out.Images[0].ImageContent == nil {
			t.Fatalf("fragment %d: %d images, NextToken %v; want one image", i, len(out.Images), out.NextToken)
		}
		pic := imagePicture(t, aws.ToString(out.Images[0].ImageContent), "JPEG", 320, 240) // the picture's own size
		if got := decodetest.Closest(pic, ref); got != 25*i {
			t.Errorf("fragment %d (received %v): image shows frame %d, want %d", i, m.ServerTime, got, 25*i)
		}
	}
	// Before the first fragment was received: NO_MEDIA.
	out, err := am.GetImages(t.Context(), &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String("cam"),
		ImageSelectorType: types.ImageSelectorTypeServerTimestamp, StartTimestamp: aws.Time(metas[0].ServerTime.Add(-time.Second)),
		EndTimestamp: aws.Time(metas[0].ServerTime.Add(-time.Second)), Format: types.FormatJpeg})
	if err != nil || len(out.Images) != 1 || out.Images[0].Error != types.ImageErrorNoMedia {
		t.Fatalf("before the first fragment: %+v, %v; want one NO_MEDIA", out, err)
	}
}

// TestGetImagesCodecs: H.265 decodes (ffmpeg), VP8 is MEDIA_ERROR, H.264 with AAC finds its video
// track; a server without a decoder says what to install.
func TestGetImagesCodecs(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "mem")
	for _, s := range []struct{ stream, clip string }{{"hevc", "h265.mkv"}, {"vp8", "webm_vp8.webm"}, {"av", "h264_aac.mkv"}} {
		e.createStream(t, s.stream, 1)
		uploadClip(t, e, s.stream, s.clip, 0, 1)
	}
	get := func(e *mediaEnv, stream string) (*kinesisvideoarchivedmedia.GetImagesOutput, error) {
		return e.archivedClient().GetImages(t.Context(), &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String(stream),
			ImageSelectorType: types.ImageSelectorTypeProducerTimestamp, StartTimestamp: aws.Time(imagesBase.Add(200 * time.Millisecond)),
			EndTimestamp: aws.Time(imagesBase.Add(1200 * time.Millisecond)), SamplingInterval: aws.Int32(1000), Format: types.FormatJpeg,
			HeightPixels: aws.Int32(120)})
	}
	out, err := get(e, "hevc")
	if err != nil {
		t.Fatal(err)
	}
	ref := decodetest.ReferenceFrames(t, "../testdata/h265.mkv", 160, 120)
	for i, img := range out.Images {
		if img.ImageContent == nil {
			t.Fatalf("H.265 image %d: %q", i, img.Error)
		}
		if got := decodetest.Closest(imagePicture(t, aws.ToString(img.ImageContent), "JPEG", 160, 120), ref); got != 25*i {
			t.Errorf("H.265 image %d shows frame %d, want %d", i, got, 25*i)
		}
	}
	if out, err := get(e, "vp8"); err != nil || len(out.Images) != 2 || out.Images[0].Error != types.ImageErrorMediaError || out.Images[1].Error != types.ImageErrorMediaError {
		t.Errorf("VP8: %+v, %v; want 2 MEDIA_ERROR", out, err)
	}
	if out, err := get(e, "av"); err != nil || len(out.Images) != 2 || out.Images[0].ImageContent == nil || out.Images[1].ImageContent == nil {
		t.Errorf("H.264 + AAC: %+v, %v; want 2 images", out, err)
	}

	none := newMediaEnv(t, "mem", func(c *Config) { c.ImageDecoder = decode.Chain{} })
	none.createStream(t, "hevc", 1)
	uploadClip(t, none, "hevc", "h265.mkv", 0)
	_, err = get(none, "hevc")
	wantAPIErrorCode(t, err, "UnsupportedStreamMediaTypeException", "install ffmpeg")
}

// TestGetImagesFrameBudget: samples 960 ms apart with 1 s GOPs need every frame up to each
// sample: a page stops at imagesFrameBudget decoded frames with a NextToken, and the pages together
// still give every sample its picture.
func TestGetImagesFrameBudget(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffmpeg, ffprobe or the AWS CLI
	testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	uploadClip(t, e, "cam", "h264.mkv", seq(60)...) // 15 loops, 60.9 s
	imgs, pages := getAllImages(t, e.archivedClient(), &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String("cam"),
		ImageSelectorType: types.ImageSelectorTypeProducerTimestamp, StartTimestamp: aws.Time(imagesBase),
		EndTimestamp: aws.Time(imagesBase.Add(60 * time.Second)), SamplingInterval: aws.Int32(960), Format: types.FormatJpeg,
		WidthPixels: aws.Int32(64), HeightPixels: aws.Int32(48), MaxResults: aws.Int64(100)})
	if len(imgs) != 63 {
		t.Fatalf("%d images, want 63", len(imgs))
	}
	t.Logf("pages of %v images", pages)
	if len(pages) < 2 || pages[0] >= 63 {
		t.Errorf("pages %v: want the frame budget to end the first page early", pages)
	}
	for i, img := range imgs {
		ms := int64(i) * 960
		_, covered := clipFrame(ms%clipPeriodMs, false) // every loop is stored here
		if covered != (img.ImageContent != nil) {
			t.Errorf("image %d at +%d ms: content %v, error %q", i, ms, img.ImageContent != nil, img.Error)
		}
	}
}
