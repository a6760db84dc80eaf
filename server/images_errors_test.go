package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
	"github.com/aws/smithy-go"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"
)

// wantAPIErrorCode checks that err is a KVS error of type code whose message contains msg.
func wantAPIErrorCode(t *testing.T, err error, code, msg string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want %s", err, err, code)
	}
	if ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msg) {
		t.Fatalf("error %s: %q, want %s containing %q", ae.ErrorCode(), ae.ErrorMessage(), code, msg)
	}
}

// gatedDecoder is a real decoder whose Decode waits until the test opens the gate: it holds a
// request inside the decode pool for as long as the test needs.
type gatedDecoder struct {
	ImageDecoder
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedDecoder) Decode(ctx context.Context, job *decode.Job) ([][]byte, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.ImageDecoder.Decode(ctx, job)
}

// TestGetImagesErrors checks each request error against the model's types, through the SDK's
// typed errors: InvalidArgumentException for every member check, ResourceNotFoundException,
// NoDataRetentionException, and ClientLimitExceededException when more requests are being
// served than MaxImageRequests.
func TestGetImagesErrors(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffmpeg")
	ff, err := decode.NewFFmpeg("")
	if err != nil {
		t.Fatal(err)
	}
	gated := &gatedDecoder{ImageDecoder: ff, entered: make(chan struct{}), gate: make(chan struct{})}
	e := newMediaEnv(t, "mem", func(c *Config) { c.ImageDecoder, c.MaxImageRequests = gated, 1 })
	e.createStream(t, "cam", 1)
	e.createStream(t, "live", 0)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1)
	am := e.archivedClient()
	valid := func() *kinesisvideoarchivedmedia.GetImagesInput {
		return &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String("cam"), ImageSelectorType: types.ImageSelectorTypeProducerTimestamp,
			StartTimestamp: aws.Time(imagesBase), EndTimestamp: aws.Time(imagesBase.Add(time.Second)), SamplingInterval: aws.Int32(500),
			Format: types.FormatJpeg}
	}
	for _, tc := range []struct {
		name, code, msg string
		mod             func(in *kinesisvideoarchivedmedia.GetImagesInput)
	}{
		{"selector", "InvalidArgumentException", "ImageSelectorType", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.ImageSelectorType = "ARRIVAL" }},
		{"end before start", "InvalidArgumentException", "before StartTimestamp", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.EndTimestamp = aws.Time(imagesBase.Add(-time.Millisecond))
		}},
		{"range over 300 s", "InvalidArgumentException", "at most 300 s", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.EndTimestamp = aws.Time(imagesBase.Add(300*time.Second + time.Millisecond))
		}},
		{"interval under 200 ms", "InvalidArgumentException", "SamplingInterval 199", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.SamplingInterval = aws.Int32(199) }},
		{"format", "InvalidArgumentException", "Format", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.Format = "GIF" }},
		{"quality 0", "InvalidArgumentException", "JPEGQuality", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.FormatConfig = map[string]string{"JPEGQuality": "0"}
		}},
		{"quality 101", "InvalidArgumentException", "JPEGQuality", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.FormatConfig = map[string]string{"JPEGQuality": "101"}
		}},
		{"quality not a number", "InvalidArgumentException", "JPEGQuality", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.FormatConfig = map[string]string{"JPEGQuality": "high"}
		}},
		{"format config key", "InvalidArgumentException", "PNGLevel", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.FormatConfig = map[string]string{"PNGLevel": "3"}
		}},
		{"width alone", "InvalidArgumentException", "WidthPixels needs HeightPixels", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.WidthPixels = aws.Int32(100) }},
		{"width 3841", "InvalidArgumentException", "WidthPixels 3841", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.WidthPixels, in.HeightPixels = aws.Int32(3841), aws.Int32(10)
		}},
		{"height 2161", "InvalidArgumentException", "HeightPixels 2161", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.HeightPixels = aws.Int32(2161) }},
		{"max results 101", "InvalidArgumentException", "MaxResults 101", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.MaxResults = aws.Int64(101) }},
		{"bad token", "InvalidArgumentException", "NextToken", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.NextToken = aws.String("bm90IGEgdG9rZW4=") }},
		{"token of another request", "InvalidArgumentException", "another request", func(in *kinesisvideoarchivedmedia.GetImagesInput) {
			in.NextToken = aws.String(encodeImagesToken(1, 42))
		}},
		{"no stream", "ResourceNotFoundException", "not found", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.StreamName = aws.String("missing") }},
		{"no retention", "NoDataRetentionException", "does not retain data", func(in *kinesisvideoarchivedmedia.GetImagesInput) { in.StreamName = aws.String("live") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := valid()
			tc.mod(in)
			_, err := am.GetImages(t.Context(), in)
			wantAPIErrorCode(t, err, tc.code, tc.msg)
		})
	}
	// The SDK's typed errors for the modeled types.
	_, err = am.GetImages(t.Context(), &kinesisvideoarchivedmedia.GetImagesInput{StreamName: aws.String("live"),
		ImageSelectorType: types.ImageSelectorTypeServerTimestamp, StartTimestamp: aws.Time(imagesBase), EndTimestamp: aws.Time(imagesBase), Format: types.FormatPng})
	wantAPIError[*types.NoDataRetentionException](t, err)

	// One request in the decode pool (MaxImageRequests 1): the next is refused at once.
	first := make(chan error, 1)
	go func() {
		out, err := am.GetImages(context.Background(), valid())
		if err == nil && (len(out.Images) != 3 || out.Images[0].ImageContent == nil) {
			err = fmt.Errorf("%d images", len(out.Images))
		}
		first <- err
	}()
	<-gated.entered
	_, err = am.GetImages(t.Context(), valid())
	wantAPIError[*types.ClientLimitExceededException](t, err)
	wantAPIErrorCode(t, err, "ClientLimitExceededException", "retry")
	go func() { // from now on decodes pass the gate freely
		for range gated.entered {
		}
	}()
	defer close(gated.entered)
	close(gated.gate)
	if err := <-first; err != nil {
		t.Fatalf("the request held in the pool: %v", err)
	}
	if _, err := am.GetImages(t.Context(), valid()); err != nil {
		t.Fatalf("after the first request ended: %v", err)
	}
}

// A Config without an ImageDecoder decodes with the ffmpeg program on PATH (what a library user of
// server.New gets; kvs server and the other tests here pass decode.Combine's decoder).
func TestImageDecoderDefault(t *testing.T) {
	ff := testutil.NeedTool(t, "ffmpeg")
	srv, err := New(Config{Store: store.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got, ok := srv.images.dec.(*decode.FFmpeg)
	if !ok {
		t.Fatalf("default ImageDecoder %T (%v), want *decode.FFmpeg", srv.images.dec, srv.images.dec)
	}
	if got.Path() != ff {
		t.Errorf("default ffmpeg %s, want %s (PATH)", got.Path(), ff)
	}
}
