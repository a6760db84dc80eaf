package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/smithy-go"

	"github.com/openkvs/kvs/server/store"
)

// controlEnv is a Server on httptest with an SDK client pointed at it.
type controlEnv struct {
	srv   *Server
	store store.Store
	ts    *httptest.Server
	kv    *kinesisvideo.Client
}

func newControlEnv(t testing.TB, mod ...func(*Config)) *controlEnv {
	t.Helper()
	st := store.NewMem()
	cfg := Config{Store: st}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		st.Close()
	})
	return &controlEnv{srv: srv, store: st, ts: ts, kv: newSDKClient(ts.URL, ts.Client())}
}

func newSDKClient(endpoint string, hc *http.Client) *kinesisvideo.Client {
	return kinesisvideo.New(kinesisvideo.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDLOCAL", "secret", ""),
		HTTPClient:       hc,
		RetryMaxAttempts: 1,
	})
}

func (e *controlEnv) create(t testing.TB, name string, mod ...func(*kinesisvideo.CreateStreamInput)) string {
	t.Helper()
	in := &kinesisvideo.CreateStreamInput{StreamName: aws.String(name)}
	for _, m := range mod {
		m(in)
	}
	out, err := e.kv.CreateStream(context.Background(), in)
	if err != nil {
		t.Fatalf("CreateStream %s: %v", name, err)
	}
	return aws.ToString(out.StreamARN)
}

func (e *controlEnv) describe(t testing.TB, name string) *types.StreamInfo {
	t.Helper()
	out, err := e.kv.DescribeStream(context.Background(), &kinesisvideo.DescribeStreamInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatalf("DescribeStream %s: %v", name, err)
	}
	return out.StreamInfo
}

// wantAPIError checks that err is (or wraps) a *T, the SDK's typed error, and that its message is
// set (the typed errors read "Message").
func wantAPIError[T error](t *testing.T, err error) {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("error = %v (%T), want %T", err, err, target)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorMessage() == "" {
		t.Errorf("%T has no message", target)
	}
}

func TestCreateDescribeStream(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t, func(c *Config) {
		c.Region = "eu-west-1"
		c.AccountID = "123456789012"
		c.Now = func() time.Time { return time.UnixMilli(1705489836421) }
	})
	ctx := t.Context()
	arn := e.create(t, "camera_101", func(in *kinesisvideo.CreateStreamInput) {
		in.DeviceName = aws.String("dev-1")
		in.MediaType = aws.String("video/h264,audio/aac")
		in.DataRetentionInHours = aws.Int32(24)
		in.Tags = map[string]string{"team": "video", "env": ""}
	})
	if want := "arn:aws:kinesisvideo:eu-west-1:123456789012:stream/camera_101/1705489836421"; arn != want {
		t.Errorf("ARN = %s, want %s", arn, want)
	}
	for _, in := range []*kinesisvideo.DescribeStreamInput{
		{StreamName: aws.String("camera_101")},
		{StreamARN: aws.String(arn)},
		{StreamName: aws.String("camera_101"), StreamARN: aws.String(arn)},
	} {
		out, err := e.kv.DescribeStream(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		si := out.StreamInfo
		if aws.ToString(si.StreamName) != "camera_101" || aws.ToString(si.StreamARN) != arn ||
			aws.ToString(si.DeviceName) != "dev-1" || aws.ToString(si.MediaType) != "video/h264,audio/aac" ||
			aws.ToInt32(si.DataRetentionInHours) != 24 || si.Status != types.StatusActive ||
			aws.ToString(si.KmsKeyId) != "arn:aws:kms:eu-west-1:123456789012:alias/aws/kinesisvideo" ||
			!si.CreationTime.Equal(time.UnixMilli(1705489836421)) || len(aws.ToString(si.Version)) != 20 {
			t.Errorf("StreamInfo = %+v", *si)
		}
	}
	tags, err := e.kv.ListTagsForStream(ctx, &kinesisvideo.ListTagsForStreamInput{StreamName: aws.String("camera_101")})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"team": "video", "env": ""}; !reflect.DeepEqual(tags.Tags, want) {
		t.Errorf("tags = %v, want %v", tags.Tags, want)
	}

	// Defaults: retention 0, no device name or media type, default KMS key.
	e.create(t, "plain")
	si := e.describe(t, "plain")
	if si.DeviceName != nil || si.MediaType != nil || aws.ToInt32(si.DataRetentionInHours) != 0 {
		t.Errorf("defaults: %+v", *si)
	}
	if v1, v2 := aws.ToString(si.Version), aws.ToString(e.describe(t, "camera_101").Version); v1 == v2 {
		t.Errorf("two streams share Version %s", v1)
	}
}

func TestCreateStreamErrors(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	e.create(t, "taken")
	tags51 := map[string]string{}
	for i := range 51 {
		tags51[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name string
		in   kinesisvideo.CreateStreamInput
		want func(*testing.T, error)
	}{
		{"exists", kinesisvideo.CreateStreamInput{StreamName: aws.String("taken")}, wantAPIError[*types.ResourceInUseException]},
		{"empty name", kinesisvideo.CreateStreamInput{StreamName: aws.String("")}, wantAPIError[*types.InvalidArgumentException]},
		{"slash", kinesisvideo.CreateStreamInput{StreamName: aws.String("a/b")}, wantAPIError[*types.InvalidArgumentException]},
		{"traversal", kinesisvideo.CreateStreamInput{StreamName: aws.String("../x")}, wantAPIError[*types.InvalidArgumentException]},
		{"dotdot", kinesisvideo.CreateStreamInput{StreamName: aws.String("..")}, wantAPIError[*types.InvalidArgumentException]},
		{"too long", kinesisvideo.CreateStreamInput{StreamName: aws.String(strings.Repeat("a", 257))}, wantAPIError[*types.InvalidArgumentException]},
		{"space", kinesisvideo.CreateStreamInput{StreamName: aws.String("a b")}, wantAPIError[*types.InvalidArgumentException]},
		{"device", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), DeviceName: aws.String("a b")}, wantAPIError[*types.InvalidArgumentException]},
		{"media type", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), MediaType: aws.String("h264")}, wantAPIError[*types.InvalidArgumentException]},
		{"media type trailing comma", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), MediaType: aws.String("video/h264,")}, wantAPIError[*types.InvalidArgumentException]},
		{"kms empty", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), KmsKeyId: aws.String("")}, wantAPIError[*types.InvalidArgumentException]},
		{"retention negative", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), DataRetentionInHours: aws.Int32(-1)}, wantAPIError[*types.InvalidArgumentException]},
		{"retention too big", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), DataRetentionInHours: aws.Int32(87601)}, wantAPIError[*types.InvalidArgumentException]},
		{"51 tags", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), Tags: tags51}, wantAPIError[*types.TagsPerResourceExceededLimitException]},
		{"bad tag key", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), Tags: map[string]string{"a*b": "v"}}, wantAPIError[*types.InvalidArgumentException]},
		{"empty tag key", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), Tags: map[string]string{"": "v"}}, wantAPIError[*types.InvalidArgumentException]},
		{"long tag value", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), Tags: map[string]string{"k": strings.Repeat("v", 257)}}, wantAPIError[*types.InvalidArgumentException]},
		{"storage tier", kinesisvideo.CreateStreamInput{StreamName: aws.String("s"), StreamStorageConfiguration: &types.StreamStorageConfiguration{DefaultStorageTier: "COLD"}}, wantAPIError[*types.InvalidArgumentException]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.kv.CreateStream(t.Context(), &tc.in)
			tc.want(t, err)
		})
	}
	// Nothing but "taken" was stored.
	all, _ := e.store.ListStreams(t.Context())
	if len(all) != 1 {
		t.Errorf("store has %d streams, want 1", len(all))
	}
	// Limits that are valid.
	e.create(t, strings.Repeat("a", 256), func(in *kinesisvideo.CreateStreamInput) {
		in.DataRetentionInHours = aws.Int32(87600)
		in.Tags = map[string]string{"ключ:/=+-@ 1": strings.Repeat("v", 256)}
		in.StreamStorageConfiguration = &types.StreamStorageConfiguration{DefaultStorageTier: types.DefaultStorageTierWarm}
	})
}

func TestDescribeStreamErrors(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	arn := e.create(t, "s1")
	e.create(t, "s2")
	cases := []struct {
		name string
		in   kinesisvideo.DescribeStreamInput
		want func(*testing.T, error)
	}{
		{"missing", kinesisvideo.DescribeStreamInput{StreamName: aws.String("nope")}, wantAPIError[*types.ResourceNotFoundException]},
		{"missing arn", kinesisvideo.DescribeStreamInput{StreamARN: aws.String("arn:aws:kinesisvideo:us-east-1:000000000000:stream/nope/1")}, wantAPIError[*types.ResourceNotFoundException]},
		{"stale arn", kinesisvideo.DescribeStreamInput{StreamARN: aws.String(arn + "0")}, wantAPIError[*types.ResourceNotFoundException]},
		{"neither", kinesisvideo.DescribeStreamInput{}, wantAPIError[*types.InvalidArgumentException]},
		{"bad arn", kinesisvideo.DescribeStreamInput{StreamARN: aws.String("arn:aws:s3:::bucket")}, wantAPIError[*types.InvalidArgumentException]},
		{"channel arn", kinesisvideo.DescribeStreamInput{StreamARN: aws.String("arn:aws:kinesisvideo:us-east-1:000000000000:channel/s1/1")}, wantAPIError[*types.InvalidArgumentException]},
		{"bad name", kinesisvideo.DescribeStreamInput{StreamName: aws.String("../s1")}, wantAPIError[*types.InvalidArgumentException]},
		{"name and arn differ", kinesisvideo.DescribeStreamInput{StreamName: aws.String("s2"), StreamARN: aws.String(arn)}, wantAPIError[*types.InvalidArgumentException]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.kv.DescribeStream(t.Context(), &tc.in)
			tc.want(t, err)
		})
	}
	_, err := e.kv.DescribeStream(t.Context(), &kinesisvideo.DescribeStreamInput{StreamName: aws.String("nope")})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) && aws.ToString(nf.Message) != "The requested stream is not found or not active." {
		t.Errorf("message = %q", aws.ToString(nf.Message))
	}
}

func TestListStreamsPaginator(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	var want []string
	for i := range 25 {
		name := fmt.Sprintf("cam-%02d", i)
		e.create(t, name)
		want = append(want, name)
	}
	e.create(t, "other")
	p := kinesisvideo.NewListStreamsPaginator(e.kv, &kinesisvideo.ListStreamsInput{
		MaxResults:          aws.Int32(10),
		StreamNameCondition: &types.StreamNameCondition{ComparisonOperator: types.ComparisonOperatorBeginsWith, ComparisonValue: aws.String("cam-")},
	})
	var got []string
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, si := range out.StreamInfoList {
			got = append(got, aws.ToString(si.StreamName))
		}
	}
	if pages != 3 || !reflect.DeepEqual(got, want) {
		t.Errorf("pages = %d, names = %v", pages, got)
	}

	// An exact multiple of the page size ends without an empty extra page.
	out, err := e.kv.ListStreams(t.Context(), &kinesisvideo.ListStreamsInput{MaxResults: aws.Int32(13)})
	if err != nil || len(out.StreamInfoList) != 13 || out.NextToken == nil {
		t.Fatalf("first page: %v, %d, token %v", err, len(out.StreamInfoList), out.NextToken)
	}
	out, err = e.kv.ListStreams(t.Context(), &kinesisvideo.ListStreamsInput{MaxResults: aws.Int32(13), NextToken: out.NextToken})
	if err != nil || len(out.StreamInfoList) != 13 || out.NextToken != nil {
		t.Fatalf("second page: %v, %d, token %v", err, len(out.StreamInfoList), out.NextToken)
	}
	out, err = e.kv.ListStreams(t.Context(), &kinesisvideo.ListStreamsInput{})
	if err != nil || len(out.StreamInfoList) != 26 || out.NextToken != nil {
		t.Fatalf("default page: %v, %d, token %v", err, len(out.StreamInfoList), out.NextToken)
	}

	for _, tc := range []struct {
		name string
		in   kinesisvideo.ListStreamsInput
	}{
		{"max 0", kinesisvideo.ListStreamsInput{MaxResults: aws.Int32(0)}},
		{"max 10001", kinesisvideo.ListStreamsInput{MaxResults: aws.Int32(10001)}},
		{"bad token", kinesisvideo.ListStreamsInput{NextToken: aws.String("!!")}},
		{"token not a name", kinesisvideo.ListStreamsInput{NextToken: aws.String("Li4vYQ==")}}, // "../a"
		{"operator", kinesisvideo.ListStreamsInput{StreamNameCondition: &types.StreamNameCondition{ComparisonOperator: "ENDS_WITH", ComparisonValue: aws.String("x")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.kv.ListStreams(t.Context(), &tc.in)
			wantAPIError[*types.InvalidArgumentException](t, err)
		})
	}
}

func TestDeleteStream(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	arn := e.create(t, "s")
	v := aws.ToString(e.describe(t, "s").Version)

	_, err := e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn), CurrentVersion: aws.String("wrong0version")})
	wantAPIError[*types.VersionMismatchException](t, err)
	_, err = e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn), CurrentVersion: aws.String("bad-version!")})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String("nonsense")})
	wantAPIError[*types.InvalidArgumentException](t, err)

	if _, err := e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn), CurrentVersion: aws.String(v)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.kv.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("s")})
	wantAPIError[*types.ResourceNotFoundException](t, err)
	_, err = e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn)})
	wantAPIError[*types.ResourceNotFoundException](t, err)

	// Without CurrentVersion there is no check.
	arn = e.create(t, "s")
	if _, err := e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteStreamStaleARN(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_700_000_000_000)
	e := newControlEnv(t, func(c *Config) { c.Now = func() time.Time { now = now.Add(time.Second); return now } })
	old := e.create(t, "s")
	if _, err := e.kv.DeleteStream(t.Context(), &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(old)}); err != nil {
		t.Fatal(err)
	}
	e.create(t, "s")
	_, err := e.kv.DeleteStream(t.Context(), &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(old)})
	wantAPIError[*types.ResourceNotFoundException](t, err)
	e.describe(t, "s") // the new stream survived
}

func TestUpdateStream(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	arn := e.create(t, "s", func(in *kinesisvideo.CreateStreamInput) { in.DeviceName = aws.String("d1") })
	v1 := aws.ToString(e.describe(t, "s").Version)
	_, err := e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamARN: aws.String(arn), CurrentVersion: aws.String(v1), MediaType: aws.String("video/h265")})
	if err != nil {
		t.Fatal(err)
	}
	si := e.describe(t, "s")
	if aws.ToString(si.MediaType) != "video/h265" || aws.ToString(si.DeviceName) != "d1" || aws.ToString(si.Version) == v1 {
		t.Errorf("after update: %+v", *si)
	}
	_, err = e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamName: aws.String("s"), CurrentVersion: aws.String(v1), DeviceName: aws.String("d2")})
	wantAPIError[*types.VersionMismatchException](t, err)
	_, err = e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamName: aws.String("s"), CurrentVersion: si.Version, DeviceName: aws.String("d 2")})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamName: aws.String("nope"), CurrentVersion: si.Version})
	wantAPIError[*types.ResourceNotFoundException](t, err)
}

func TestUpdateDataRetention(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	e.create(t, "s", func(in *kinesisvideo.CreateStreamInput) { in.DataRetentionInHours = aws.Int32(2) })
	update := func(op types.UpdateDataRetentionOperation, change int32, version *string) error {
		_, err := e.kv.UpdateDataRetention(ctx, &kinesisvideo.UpdateDataRetentionInput{
			StreamName: aws.String("s"), CurrentVersion: version, Operation: op, DataRetentionChangeInHours: aws.Int32(change)})
		return err
	}
	v := e.describe(t, "s").Version
	if err := update(types.UpdateDataRetentionOperationIncreaseDataRetention, 10, v); err != nil {
		t.Fatal(err)
	}
	si := e.describe(t, "s")
	if aws.ToInt32(si.DataRetentionInHours) != 12 || aws.ToString(si.Version) == aws.ToString(v) {
		t.Fatalf("after increase: %+v", *si)
	}
	wantAPIError[*types.VersionMismatchException](t, update(types.UpdateDataRetentionOperationDecreaseDataRetention, 1, v))
	wantAPIError[*types.InvalidArgumentException](t, update(types.UpdateDataRetentionOperationDecreaseDataRetention, 13, si.Version))
	wantAPIError[*types.InvalidArgumentException](t, update(types.UpdateDataRetentionOperationIncreaseDataRetention, 87589, si.Version))
	wantAPIError[*types.InvalidArgumentException](t, update(types.UpdateDataRetentionOperationIncreaseDataRetention, 0, si.Version))
	wantAPIError[*types.InvalidArgumentException](t, update("SIDEWAYS", 1, si.Version))
	if err := update(types.UpdateDataRetentionOperationDecreaseDataRetention, 12, si.Version); err != nil {
		t.Fatal(err)
	}
	if si := e.describe(t, "s"); aws.ToInt32(si.DataRetentionInHours) != 0 {
		t.Errorf("retention = %d, want 0", aws.ToInt32(si.DataRetentionInHours))
	}
	_, err := e.kv.UpdateDataRetention(ctx, &kinesisvideo.UpdateDataRetentionInput{StreamName: aws.String("nope"), CurrentVersion: v,
		Operation: types.UpdateDataRetentionOperationIncreaseDataRetention, DataRetentionChangeInHours: aws.Int32(1)})
	wantAPIError[*types.ResourceNotFoundException](t, err)
}

func TestGetDataEndpoint(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	e.create(t, "s")
	for _, api := range types.APINamePutMedia.Values() {
		out, err := e.kv.GetDataEndpoint(t.Context(), &kinesisvideo.GetDataEndpointInput{StreamName: aws.String("s"), APIName: api})
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if aws.ToString(out.DataEndpoint) != e.ts.URL {
			t.Errorf("%s: DataEndpoint = %s, want %s", api, aws.ToString(out.DataEndpoint), e.ts.URL)
		}
	}
	_, err := e.kv.GetDataEndpoint(t.Context(), &kinesisvideo.GetDataEndpointInput{StreamName: aws.String("s"), APIName: "PUT_STUFF"})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.GetDataEndpoint(t.Context(), &kinesisvideo.GetDataEndpointInput{StreamName: aws.String("nope"), APIName: types.APINameGetMedia})
	wantAPIError[*types.ResourceNotFoundException](t, err)

	adv := newControlEnv(t, func(c *Config) { c.AdvertiseURL = "https://kvs.example.com:8443/" })
	adv.create(t, "s")
	out, err := adv.kv.GetDataEndpoint(t.Context(), &kinesisvideo.GetDataEndpointInput{StreamName: aws.String("s"), APIName: types.APINamePutMedia})
	if err != nil || aws.ToString(out.DataEndpoint) != "https://kvs.example.com:8443" {
		t.Errorf("advertised: %v, %v", err, out)
	}
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{},
		{Store: store.NewMem(), AdvertiseURL: "http://host/path"},
		{Store: store.NewMem(), AdvertiseURL: "ftp://host"},
		{Store: store.NewMem(), AdvertiseURL: "host:4567"},
		{Store: store.NewMem(), AccountID: "123"},
		{Store: store.NewMem(), Region: "US EAST"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestTagStream(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	arn := e.create(t, "s", func(in *kinesisvideo.CreateStreamInput) { in.Tags = map[string]string{"a": "1"} })
	v := aws.ToString(e.describe(t, "s").Version)
	list := func() map[string]string {
		out, err := e.kv.ListTagsForStream(ctx, &kinesisvideo.ListTagsForStreamInput{StreamARN: aws.String(arn)})
		if err != nil {
			t.Fatal(err)
		}
		return out.Tags
	}
	if _, err := e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: aws.String("s"), Tags: map[string]string{"a": "2", "b": "3"}}); err != nil {
		t.Fatal(err)
	}
	if got := list(); !reflect.DeepEqual(got, map[string]string{"a": "2", "b": "3"}) {
		t.Errorf("tags = %v", got)
	}
	if _, err := e.kv.UntagStream(ctx, &kinesisvideo.UntagStreamInput{StreamARN: aws.String(arn), TagKeyList: []string{"a", "missing"}}); err != nil {
		t.Fatal(err)
	}
	if got := list(); !reflect.DeepEqual(got, map[string]string{"b": "3"}) {
		t.Errorf("tags = %v", got)
	}
	if got := aws.ToString(e.describe(t, "s").Version); got != v {
		t.Errorf("tagging changed Version %s → %s", v, got)
	}
	// 49 more makes 50: fine; one more: over the limit, and nothing changes.
	more := map[string]string{}
	for i := range 49 {
		more[fmt.Sprintf("k%d", i)] = "v"
	}
	if _, err := e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: aws.String("s"), Tags: more}); err != nil {
		t.Fatal(err)
	}
	_, err := e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: aws.String("s"), Tags: map[string]string{"one-more": "x"}})
	wantAPIError[*types.TagsPerResourceExceededLimitException](t, err)
	if n := len(list()); n != 50 {
		t.Errorf("%d tags after refused TagStream, want 50", n)
	}

	_, err = e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamARN: aws.String("arn:bad"), Tags: map[string]string{"a": "b"}})
	wantAPIError[*types.InvalidResourceFormatException](t, err)
	_, err = e.kv.UntagStream(ctx, &kinesisvideo.UntagStreamInput{StreamARN: aws.String("arn:bad"), TagKeyList: []string{"a"}})
	wantAPIError[*types.InvalidResourceFormatException](t, err)
	_, err = e.kv.ListTagsForStream(ctx, &kinesisvideo.ListTagsForStreamInput{StreamARN: aws.String("arn:bad")})
	wantAPIError[*types.InvalidResourceFormatException](t, err)
	_, err = e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: aws.String("nope"), Tags: map[string]string{"a": "b"}})
	wantAPIError[*types.ResourceNotFoundException](t, err)
	_, err = e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: aws.String("s"), Tags: map[string]string{}})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.UntagStream(ctx, &kinesisvideo.UntagStreamInput{StreamName: aws.String("s"), TagKeyList: []string{}})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.ListTagsForStream(ctx, &kinesisvideo.ListTagsForStreamInput{StreamName: aws.String("nope")})
	wantAPIError[*types.ResourceNotFoundException](t, err)
}

func TestTagResource(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	arn := e.create(t, "s")
	_, err := e.kv.TagResource(ctx, &kinesisvideo.TagResourceInput{ResourceARN: aws.String(arn),
		Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("b"), Value: aws.String("")}}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.kv.ListTagsForResource(ctx, &kinesisvideo.ListTagsForResourceInput{ResourceARN: aws.String(arn)})
	if err != nil || !reflect.DeepEqual(out.Tags, map[string]string{"a": "1", "b": ""}) {
		t.Fatalf("ListTagsForResource: %v, %v", err, out)
	}
	if _, err := e.kv.UntagResource(ctx, &kinesisvideo.UntagResourceInput{ResourceARN: aws.String(arn), TagKeyList: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.kv.ListTagsForResource(ctx, &kinesisvideo.ListTagsForResourceInput{ResourceARN: aws.String(arn)}); !reflect.DeepEqual(got.Tags, map[string]string{"a": "1"}) {
		t.Errorf("after untag: %v", got.Tags)
	}
	tags51 := make([]types.Tag, 51)
	for i := range tags51 {
		tags51[i] = types.Tag{Key: aws.String(fmt.Sprint(i)), Value: aws.String("v")}
	}
	_, err = e.kv.TagResource(ctx, &kinesisvideo.TagResourceInput{ResourceARN: aws.String(arn), Tags: tags51})
	wantAPIError[*types.TagsPerResourceExceededLimitException](t, err)
	_, err = e.kv.TagResource(ctx, &kinesisvideo.TagResourceInput{ResourceARN: aws.String("arn:nope"), Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}}})
	wantAPIError[*types.InvalidArgumentException](t, err)
	_, err = e.kv.ListTagsForResource(ctx, &kinesisvideo.ListTagsForResourceInput{ResourceARN: aws.String("arn:aws:kinesisvideo:us-east-1:000000000000:channel/c/1")})
	wantAPIError[*types.ResourceNotFoundException](t, err)
	_, err = e.kv.UntagResource(ctx, &kinesisvideo.UntagResourceInput{ResourceARN: aws.String("arn:aws:kinesisvideo:us-east-1:000000000000:stream/gone/1"), TagKeyList: []string{"a"}})
	wantAPIError[*types.ResourceNotFoundException](t, err)
}
