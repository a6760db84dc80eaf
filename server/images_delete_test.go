package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"
)

// deleteAfterListStore deletes a stream through the server's DeleteStream right after the first
// time listing of it has been answered: a request that listed the stream's fragments then finds
// them gone with their stream.
type deleteAfterListStore struct {
	store.Store
	once   sync.Once
	delete func()
}

func (s *deleteAfterListStore) TimeRange(ctx context.Context, stream string, kind store.TimeKind, start, end time.Time, after store.Cursor, limit int) ([]store.FragmentMeta, error) {
	out, err := s.Store.TimeRange(ctx, stream, kind, start, end, after, limit)
	if s.delete != nil && len(out) > 0 {
		s.once.Do(s.delete)
	}
	return out, err
}

// TestGetImagesStreamDeletedMidRequest: a stream deleted while GetImages plans its images is
// ResourceNotFoundException, as for any request that names a stream that is gone; it was a 200
// whose every image said MEDIA_ERROR (the media looked corrupt) and an ERROR log per fragment.
func TestGetImagesStreamDeletedMidRequest(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffmpeg")
	fsStore, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &deleteAfterListStore{Store: fsStore}
	e := newMediaEnvStore(t, st)
	arn := e.createStream(t, "cam", 1)
	uploadClip(t, e, "cam", "h264.mkv", 0, 1)
	st.delete = func() {
		resp := e.post(t, context.Background(), "/deleteStream", map[string]any{"StreamARN": arn})
		resp.Body.Close()
	}
	out, err := e.archivedClient().GetImages(t.Context(), &kinesisvideoarchivedmedia.GetImagesInput{
		StreamName: aws.String("cam"), ImageSelectorType: types.ImageSelectorTypeProducerTimestamp,
		StartTimestamp: aws.Time(imagesBase), EndTimestamp: aws.Time(imagesBase.Add(time.Second)),
		SamplingInterval: aws.Int32(500), Format: types.FormatJpeg})
	if err == nil {
		for _, im := range out.Images {
			t.Logf("image at %v: error %q, %d bytes", aws.ToTime(im.TimeStamp), im.Error, len(aws.ToString(im.ImageContent)))
		}
		t.Fatalf("GetImages of a stream deleted mid-request answered %d images, want ResourceNotFoundException", len(out.Images))
	}
	wantAPIError[*types.ResourceNotFoundException](t, err)
}
