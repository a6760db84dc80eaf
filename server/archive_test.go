package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"

	"github.com/openkvs/kvs/mkv"
)

func (e *mediaEnv) archivedClient() *kinesisvideoarchivedmedia.Client {
	return kinesisvideoarchivedmedia.New(kinesisvideoarchivedmedia.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(e.ts.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDLOCAL", "secret", ""),
		HTTPClient:       bufferedBodyClient{e.ts.Client()},
		RetryMaxAttempts: 1,
	})
}

// bufferedBodyClient hands the transport a private copy of the request body. smithy-go closes the
// request body as soon as the response headers arrive, and net/http may then take the closed body
// for a short write and close the connection in the middle of a streaming response ("use of
// closed network connection"). client.bufferedBodyClient does the same for kvs users.
type bufferedBodyClient struct{ next *http.Client }

func (c bufferedBodyClient) Do(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.ContentLength <= 0 {
		return c.next.Do(r)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(b))
	return c.next.Do(r2)
}

// listAll pages through ListFragments with the SDK paginator and returns the fragments and the
// number of pages.
func listAll(t *testing.T, am *kinesisvideoarchivedmedia.Client, in *kinesisvideoarchivedmedia.ListFragmentsInput) ([]types.Fragment, int) {
	t.Helper()
	p := kinesisvideoarchivedmedia.NewListFragmentsPaginator(am, in)
	var all []types.Fragment
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		all = append(all, out.Fragments...)
	}
	return all, pages
}

func TestListFragmentsSDK(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			clock := &fakeClock{}
			e := newMediaEnv(t, kind, func(c *Config) { c.Now = clock.Now })
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			nums := e.ingest(t, "cam", c, 0, 8)
			metas, err := e.store.Range(t.Context(), "cam", 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			am := e.archivedClient()
			cases := []struct {
				name      string
				sel       *types.FragmentSelector
				want      []uint64
				wantPages int
			}{
				{"everything", nil, nums, 3},
				{"server range inclusive", &types.FragmentSelector{FragmentSelectorType: types.FragmentSelectorTypeServerTimestamp,
					TimestampRange: &types.TimestampRange{StartTimestamp: aws.Time(metas[1].ServerTime), EndTimestamp: aws.Time(metas[6].ServerTime)}}, nums[1:7], 2},
				{"producer range inclusive", &types.FragmentSelector{FragmentSelectorType: types.FragmentSelectorTypeProducerTimestamp,
					TimestampRange: &types.TimestampRange{StartTimestamp: aws.Time(metas[2].ProducerTime), EndTimestamp: aws.Time(metas[5].ProducerTime)}}, nums[2:6], 2},
				{"empty range", &types.FragmentSelector{FragmentSelectorType: types.FragmentSelectorTypeServerTimestamp,
					TimestampRange: &types.TimestampRange{StartTimestamp: aws.Time(time.Unix(1000, 0)), EndTimestamp: aws.Time(time.Unix(2000, 0))}}, nil, 1},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					frags, pages := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{
						StreamName: aws.String("cam"), MaxResults: aws.Int64(3), FragmentSelector: tc.sel})
					if pages != tc.wantPages {
						t.Errorf("%d pages, want %d", pages, tc.wantPages)
					}
					if len(frags) != len(tc.want) {
						t.Fatalf("%d fragments, want %d", len(frags), len(tc.want))
					}
					for i, f := range frags {
						n, err := parseFragmentNumber(aws.ToString(f.FragmentNumber))
						if err != nil || n != tc.want[i] {
							t.Fatalf("fragment %d: %s, want %d", i, aws.ToString(f.FragmentNumber), tc.want[i])
						}
						m := metas[n-metas[0].Number]
						if f.FragmentSizeInBytes != m.Size || f.FragmentLengthInMilliseconds != m.Duration.Milliseconds() ||
							!f.ServerTimestamp.Equal(m.ServerTime.Truncate(time.Millisecond)) ||
							!f.ProducerTimestamp.Equal(m.ProducerTime.Truncate(time.Millisecond)) {
							t.Fatalf("fragment %+v, stored %+v", f, m)
						}
					}
				})
			}
		})
	}
}

// TestTimestampsAtReportedPrecision: fragments are stored with the millisecond timestamps the APIs
// report, so a range that ends at a reported timestamp (or at a "now" the SDK rounded down to the
// millisecond just after the upload) holds the fragment. A clock and timecodes with sub-millisecond
// parts: stored in nanoseconds, the last fragment fell outside such a range.
func TestTimestampsAtReportedPrecision(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			var n atomic.Int64
			e := newMediaEnv(t, kind, func(c *Config) {
				c.Now = func() time.Time {
					return time.Unix(1_800_000_000, 123_456_789).Add(time.Duration(n.Add(1)) * time.Second)
				}
			})
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			c.scale = 100_000 // 0.1 ms ticks: base below puts every producer time 0.7 ms past a millisecond
			base := int64(baseMillis*10 + 7)
			nums := e.ingestAt(t, "cam", c, 0, 3, base, true)
			metas, err := e.store.Range(t.Context(), "cam", nums[0], 0)
			if err != nil || len(metas) != 3 {
				t.Fatalf("stored %d fragments (%v), want 3", len(metas), err)
			}
			for _, m := range metas {
				if m.ServerTime.Nanosecond()%1e6 != 0 || m.ProducerTime.Nanosecond()%1e6 != 0 {
					t.Errorf("fragment %d stored at server %s, producer %s: want whole milliseconds", m.Number,
						m.ServerTime.Format(time.RFC3339Nano), m.ProducerTime.Format(time.RFC3339Nano))
				}
			}
			if ns := metas[2].ServerTime.Nanosecond(); ns != 123_000_000 {
				t.Errorf("third fragment's server time %s, want .123 s (the clock's millisecond)", metas[2].ServerTime.Format(time.RFC3339Nano))
			}
			am := e.archivedClient()
			all, _ := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam")})
			if len(all) != 3 {
				t.Fatalf("listed %d fragments, want 3", len(all))
			}
			for _, typ := range []types.FragmentSelectorType{types.FragmentSelectorTypeServerTimestamp, types.FragmentSelectorTypeProducerTimestamp} {
				ts := func(f types.Fragment) *time.Time {
					if typ == types.FragmentSelectorTypeServerTimestamp {
						return f.ServerTimestamp
					}
					return f.ProducerTimestamp
				}
				// The range is exactly [first reported, last reported]: all three are in it.
				got, _ := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam"),
					FragmentSelector: &types.FragmentSelector{FragmentSelectorType: typ,
						TimestampRange: &types.TimestampRange{StartTimestamp: ts(all[0]), EndTimestamp: ts(all[2])}}})
				if len(got) != 3 {
					t.Errorf("%s range [%s, %s]: %d fragments, want 3", typ, ts(all[0]).Format(time.RFC3339Nano),
						ts(all[2]).Format(time.RFC3339Nano), len(got))
				}
			}
		})
	}
}

// TestProducerTimestampsAfter2116: a fragment whose producer timestamp lies between 2116 and
// 2262 (the int64 nanoseconds PutMedia stores) is listed by a range that holds it, and by the
// open range of kvs's client (which ends in 2262). Ranges were clamped to 2^62 ns
// (2116-02-20T23:53:38Z), so ListFragments, GetClip, HLS and GetImages found no such fragment.
func TestProducerTimestampsAfter2116(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	const base = 5_000_000_000_000 // 2128-06-11T08:53:20Z, in ms
	nums := e.ingestAt(t, "cam", c, 0, 2, base, true)
	at := time.UnixMilli(base)
	got, _ := listAll(t, e.archivedClient(), &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam"),
		FragmentSelector: &types.FragmentSelector{FragmentSelectorType: types.FragmentSelectorTypeProducerTimestamp,
			TimestampRange: &types.TimestampRange{StartTimestamp: aws.Time(at.Add(-time.Hour)), EndTimestamp: aws.Time(at.Add(time.Hour))}}})
	if len(got) != len(nums) {
		t.Errorf("producer range around %s: %d fragments, want %d", at.UTC().Format(time.RFC3339), len(got), len(nums))
	}
	cl, err := client.New(t.Context(), client.Config{Endpoint: e.ts.URL, Region: "us-east-1", HTTPClient: e.ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	all, err := cl.ListFragments(t.Context(), client.ListFragmentsInput{Stream: "cam", Type: client.ProducerTimestamp})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(nums) {
		t.Errorf("client ListFragments on producer timestamps, range open: %d fragments, want %d", len(all), len(nums))
	}
}

// TestRangeAtReportedTimestampFarFuture: a range that starts and ends at a fragment's reported
// timestamp holds it in any year the stores keep. The Go SDK sends 4300000000.001 (2106); read
// as a float64 and rounded to the microsecond it became 4300000000.001001, after the fragment.
func TestRangeAtReportedTimestampFarFuture(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	e.ingestAt(t, "cam", c, 0, 4, 4_300_000_000_001, true)
	am := e.archivedClient()
	all, _ := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam")})
	if len(all) != 4 {
		t.Fatalf("listed %d fragments, want 4", len(all))
	}
	for _, f := range all {
		got, _ := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("cam"),
			FragmentSelector: &types.FragmentSelector{FragmentSelectorType: types.FragmentSelectorTypeProducerTimestamp,
				TimestampRange: &types.TimestampRange{StartTimestamp: f.ProducerTimestamp, EndTimestamp: f.ProducerTimestamp}}})
		if len(got) != 1 {
			t.Errorf("range [%s, %[1]s]: %d fragments, want 1", f.ProducerTimestamp.Format(time.RFC3339Nano), len(got))
		}
	}
}

func TestListFragmentsErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	rng := map[string]any{"StartTimestamp": 10, "EndTimestamp": 20}
	cases := []struct {
		name   string
		body   map[string]any
		status int
	}{
		{"max results 0", map[string]any{"StreamName": "cam", "MaxResults": 0}, 400},
		{"max results 1001", map[string]any{"StreamName": "cam", "MaxResults": 1001}, 400},
		{"token not base64", map[string]any{"StreamName": "cam", "NextToken": "!!"}, 400},
		{"token not ours", map[string]any{"StreamName": "cam", "NextToken": "aGVsbG8="}, 400},
		{"selector type", map[string]any{"StreamName": "cam", "FragmentSelector": map[string]any{"FragmentSelectorType": "ARRIVAL", "TimestampRange": rng}}, 400},
		{"no range", map[string]any{"StreamName": "cam", "FragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP"}}, 400},
		{"range reversed", map[string]any{"StreamName": "cam", "FragmentSelector": map[string]any{"FragmentSelectorType": "SERVER_TIMESTAMP",
			"TimestampRange": map[string]any{"StartTimestamp": 20, "EndTimestamp": 10}}}, 400},
		{"unknown stream", map[string]any{"StreamName": "nope"}, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.post(t, t.Context(), "/listFragments", tc.body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

// Retention-0 streams list (and serve) their live buffer.
func TestListFragmentsNoRetention(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "live", 0)
	c := loadClip(t, "h264.mkv")
	nums := e.ingestAt(t, "live", c, 0, 5, baseMillis, false)
	am := e.archivedClient()
	frags, _ := listAll(t, am, &kinesisvideoarchivedmedia.ListFragmentsInput{StreamName: aws.String("live"), MaxResults: aws.Int64(2)})
	if len(frags) != 5 || aws.ToString(frags[4].FragmentNumber) != formatFragmentNumber(nums[4]) {
		t.Fatalf("listed %d fragments", len(frags))
	}
	out, err := am.GetMediaForFragmentList(t.Context(), &kinesisvideoarchivedmedia.GetMediaForFragmentListInput{
		StreamName: aws.String("live"), Fragments: []string{formatFragmentNumber(nums[2])}})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Payload.Close()
	if got := readFragments(t, out.Payload); len(got) != 1 || len(got[0].Frames) != len(c.frags[2]) {
		t.Fatalf("got %d fragments", len(got))
	}
}

// A stream whose retention changes between uploads gets the live buffer of its new retention: after
// a decrease to 0 its buffer is what ListFragments lists (it listed nothing: the buffer kept the
// archived stream's limits, and those hide what the store lacks), after an increase it is the
// short window of a stream that keeps data (it kept 5 minutes and 200 MB of memory).
func TestRetentionChangeSetsBufferLimits(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	c := loadClip(t, "h264.mkv")
	retention := func(stream, op string) {
		var d struct{ StreamInfo struct{ Version string } }
		e.call(t, "/describeStream", map[string]any{"StreamName": stream}, &d)
		e.call(t, "/updateDataRetention", map[string]any{"StreamName": stream, "CurrentVersion": d.StreamInfo.Version,
			"Operation": op, "DataRetentionChangeInHours": 1}, nil)
	}

	e.createStream(t, "down", 1)
	e.ingest(t, "down", c, 0, 2)
	retention("down", "DECREASE_DATA_RETENTION") // to 0: the stored fragments go
	nums := e.ingestAt(t, "down", c, 2, 3, baseMillis, false)
	var out listFragmentsResponse
	e.call(t, "/listFragments", map[string]any{"StreamName": "down"}, &out)
	var got, want []string
	for _, f := range out.Fragments {
		got = append(got, f.FragmentNumber)
	}
	for _, n := range nums {
		want = append(want, formatFragmentNumber(n))
	}
	// The fragments stored before the decrease may still be in the buffer, and then listed too.
	if len(got) < len(want) || !slices.Equal(got[len(got)-len(want):], want) {
		t.Errorf("retention 0 after a decrease: listed %v, want the live buffer's, ending with %v", got, want)
	}

	arn := e.createStream(t, "up", 0)
	e.ingestAt(t, "up", c, 0, 2, baseMillis, false)
	retention("up", "INCREASE_DATA_RETENTION")
	e.ingest(t, "up", c, 2, 1)
	buf, _ := e.srv.media.cache.stream("up", arn, bufferLimits{})
	buf.mu.Lock()
	limits := buf.limits
	buf.mu.Unlock()
	if limits != e.srv.media.archivedLimits {
		t.Errorf("retention 1 h after an increase: buffer limits %+v, want %+v", limits, e.srv.media.archivedLimits)
	}
}

func TestGetMediaForFragmentListSDK(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264_aac.mkv")
			nums := e.ingest(t, "cam", c, 0, 4)
			am := e.archivedClient()
			ask := []uint64{nums[3], nums[0], nums[3]} // request order, duplicates delivered twice
			var in []string
			for _, n := range ask {
				in = append(in, formatFragmentNumber(n))
			}
			out, err := am.GetMediaForFragmentList(t.Context(), &kinesisvideoarchivedmedia.GetMediaForFragmentListInput{
				StreamName: aws.String("cam"), Fragments: in})
			if err != nil {
				t.Fatal(err)
			}
			defer out.Payload.Close()
			if ct := aws.ToString(out.ContentType); ct != "video/webm" {
				t.Errorf("ContentType %q", ct)
			}
			frags := readFragments(t, out.Payload)
			if got := fragmentNumbers(t, frags); !equalNumbers(got, ask) {
				t.Fatalf("got %v, want %v", got, ask)
			}
			for i, f := range frags {
				src := c.frags[int(ask[i]-nums[0])]
				if len(f.Frames) != len(src) {
					t.Fatalf("fragment %d: %d frames, want %d", i, len(f.Frames), len(src))
				}
				for _, name := range []string{mkv.TagServerTimestamp, mkv.TagProducerTimestamp} {
					if !timestampTagPattern.MatchString(tag(t, f, name)) {
						t.Errorf("%s = %q", name, tag(t, f, name))
					}
				}
				if tag(t, f, mkv.TagServerSideTimestamp) != tag(t, f, mkv.TagServerTimestamp) ||
					tag(t, f, mkv.TagProducerSideTimestamp) != tag(t, f, mkv.TagProducerTimestamp) {
					t.Errorf("*_SIDE_TIMESTAMP tags differ from the stored ones")
				}
				if _, ok := f.Tag(mkv.TagContinuationToken); ok {
					t.Errorf("GetMediaForFragmentList chunk has a continuation token")
				}
			}

			_, err = am.GetMediaForFragmentList(t.Context(), &kinesisvideoarchivedmedia.GetMediaForFragmentListInput{
				StreamName: aws.String("cam"), Fragments: []string{formatFragmentNumber(nums[0]), formatFragmentNumber(999)}})
			var nf *types.ResourceNotFoundException
			if !errors.As(err, &nf) {
				t.Errorf("unknown fragment: %v, want ResourceNotFoundException", err)
			}
			_, err = am.GetMediaForFragmentList(t.Context(), &kinesisvideoarchivedmedia.GetMediaForFragmentListInput{
				StreamName: aws.String("cam"), Fragments: []string{"12x"}})
			var ia *types.InvalidArgumentException
			if !errors.As(err, &ia) {
				t.Errorf("malformed fragment number: %v, want InvalidArgumentException", err)
			}
			_, err = am.GetMediaForFragmentList(t.Context(), &kinesisvideoarchivedmedia.GetMediaForFragmentListInput{
				StreamName: aws.String("cam"), Fragments: []string{}})
			if !errors.As(err, &ia) {
				t.Errorf("empty list: %v, want InvalidArgumentException", err)
			}
		})
	}
}

// The real AWS CLI v2 against the media APIs: list-fragments, get-media-for-fragment-list and
// get-media (which ends because GetMediaIdleTimeout is set: the CLI cannot send x-kvs-no-follow).
func TestMediaAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	ffprobe := testutil.NeedTool(t, "ffprobe")
	e := newMediaEnv(t, "fs", func(c *Config) { c.GetMediaIdleTimeout = 300 * time.Millisecond })
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	nums := e.ingest(t, "cam", c, 0, 8)
	dir := t.TempDir()
	cli := testutil.NewAWSCLI(t, e.ts.URL)
	run := func(args ...string) []byte {
		t.Helper()
		out, stderr, code := cli.Run(args...)
		if code != 0 {
			t.Fatalf("aws %v: exit %d: %s", args, code, stderr)
		}
		return out
	}
	var list struct {
		Fragments []struct {
			FragmentNumber    string
			ProducerTimestamp string // the CLI prints ISO 8601
		}
	}
	if err := json.Unmarshal(run("kinesis-video-archived-media", "list-fragments", "--stream-name", "cam", "--page-size", "3"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Fragments) != 8 {
		t.Fatalf("list-fragments: %d fragments, want 8", len(list.Fragments))
	}
	// botocore sends whole seconds: the range [floor(first), ceil(last)] still holds them all.
	first, err1 := time.Parse(time.RFC3339Nano, list.Fragments[0].ProducerTimestamp)
	last, err2 := time.Parse(time.RFC3339Nano, list.Fragments[7].ProducerTimestamp)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	sel := "FragmentSelectorType=PRODUCER_TIMESTAMP,TimestampRange={StartTimestamp=" + strconv.FormatInt(first.Unix(), 10) +
		",EndTimestamp=" + strconv.FormatInt(last.Unix()+1, 10) + "}"
	list.Fragments = nil
	if err := json.Unmarshal(run("kinesis-video-archived-media", "list-fragments", "--stream-name", "cam", "--fragment-selector", sel), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Fragments) != 8 {
		t.Fatalf("list-fragments with a producer range: %d fragments, want 8", len(list.Fragments))
	}

	var want []string
	for _, n := range nums {
		want = append(want, formatFragmentNumber(n))
	}
	listOut := filepath.Join(dir, "list.mkv")
	// The outfile goes first: --fragments takes every argument after it.
	run(append([]string{"kinesis-video-archived-media", "get-media-for-fragment-list", listOut, "--stream-name", "cam", "--fragments"}, want...)...)
	checkOutput(t, ffprobe, listOut, c, nums)

	mediaOut := filepath.Join(dir, "media.mkv")
	run("kinesis-video-media", "get-media", "--stream-name", "cam", "--start-selector", "StartSelectorType=EARLIEST", mediaOut)
	checkOutput(t, ffprobe, mediaOut, c, nums)
}

// A ListFragments NextToken taken from a response resumes the listing in the AWS CLI's
// --starting-token (and boto3's PaginationConfig StartingToken, the same botocore paginator),
// as the real service's opaque tokens do. The token was base64 of a JSON object, which botocore
// takes for a token of its own: it sent the object's members as parameters and the CLI failed
// with "Unknown parameter in input".
func TestListFragmentsAWSCLIStartingToken(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	nums := e.ingest(t, "cam", loadClip(t, "h264.mkv"), 0, 8)
	cli := testutil.NewAWSCLI(t, e.ts.URL)
	var first, rest struct {
		Fragments []struct{ FragmentNumber string }
		NextToken string
	}
	cli.OK(&first, "kinesis-video-archived-media", "list-fragments", "--stream-name", "cam", "--no-paginate", "--max-results", "3")
	if len(first.Fragments) != 3 || first.NextToken == "" {
		t.Fatalf("first page: %d fragments, NextToken %q; want 3 and a token", len(first.Fragments), first.NextToken)
	}
	out, stderr, code := cli.Run("kinesis-video-archived-media", "list-fragments", "--stream-name", "cam", "--starting-token", first.NextToken)
	if code != 0 {
		t.Fatalf("list-fragments --starting-token (the service's NextToken): exit %d: %s", code, stderr)
	}
	if err := json.Unmarshal(out, &rest); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range append(first.Fragments, rest.Fragments...) {
		got = append(got, f.FragmentNumber)
	}
	var want []string
	for _, n := range nums {
		want = append(want, formatFragmentNumber(n))
	}
	if !slices.Equal(got, want) {
		t.Errorf("listed %d fragments across the two calls, want the %d stored, once each, in order", len(got), len(want))
	}
}

// checkOutput requires a file of chunks to decode fully and to carry one FRAGMENT_NUMBER per
// fragment, in order.
func checkOutput(t *testing.T, ffprobe, path string, c *clip, nums []uint64) {
	t.Helper()
	checkFFprobe(t, ffprobe, path, c, len(nums)/len(c.frags))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fragmentNumbers(t, readFragments(t, bytes.NewReader(data))); !equalNumbers(got, nums) {
		t.Fatalf("%s: fragments %v, want %v", filepath.Base(path), got, nums)
	}
}

// A stream whose retention is decreased to 0 while an HLS player plays it: its playlists, which
// the player asks for every few seconds, do not give the live buffer back the archived stream's
// limits (1.5 s), which would take the retention-0 stream's only copy of its fragments out of
// memory long before ListFragments or a GetMedia reader got to them.
func TestRetentionZeroBufferKeptByHLSPlayer(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	c := loadClip(t, "h264.mkv")
	arn := e.createStream(t, "down", 1)
	e.ingest(t, "down", c, 0, 2)
	session, typ := e.hlsURL(t, map[string]any{"StreamName": "down", "PlaybackMode": "LIVE"})
	if typ != "" {
		t.Fatalf("GetHLSStreamingSessionURL: %s", typ)
	}
	var d struct{ StreamInfo struct{ Version string } }
	e.call(t, "/describeStream", map[string]any{"StreamName": "down"}, &d)
	e.call(t, "/updateDataRetention", map[string]any{"StreamName": "down", "CurrentVersion": d.StreamInfo.Version,
		"Operation": "DECREASE_DATA_RETENTION", "DataRetentionChangeInHours": 1}, nil)
	e.ingestAt(t, "down", c, 2, 3, baseMillis, false)
	var out listFragmentsResponse
	e.call(t, "/listFragments", map[string]any{"StreamName": "down"}, &out)
	httpGet(t, session) // the player's next playlist
	buf, _ := e.srv.media.cache.stream("down", arn, bufferLimits{})
	buf.mu.Lock()
	limits := buf.limits
	buf.mu.Unlock()
	if limits != e.srv.media.liveOnlyLimits {
		t.Errorf("retention 0, after an HLS playlist: buffer limits %+v, want %+v", limits, e.srv.media.liveOnlyLimits)
	}
}

// TestListFragmentsTokenOtherStream: a NextToken continues the listing of the stream that returned
// it. Sent for another stream (a client paging several cameras that mixes up their tokens) it is
// InvalidArgumentException, not that stream's fragments from the first stream's cursor on, which
// silently left out the other stream's first fragments. A stream deleted and created again under
// its name is another stream too.
func TestListFragmentsTokenOtherStream(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	c := loadClip(t, "h264.mkv")
	for _, name := range []string{"a", "b"} {
		e.createStream(t, name, 1)
		e.ingest(t, name, c, 0, 3)
	}
	rng := map[string]any{"StartTimestamp": 0, "EndTimestamp": int64(4_000_000_000)}
	for _, sel := range []map[string]any{nil, {"FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": rng},
		{"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": rng}} {
		body := map[string]any{"StreamName": "a", "MaxResults": 1}
		if sel != nil {
			body["FragmentSelector"] = sel
		}
		var page struct {
			Fragments []struct{ FragmentNumber string }
			NextToken string
		}
		e.call(t, "/listFragments", body, &page)
		if len(page.Fragments) != 1 || page.NextToken == "" {
			t.Fatalf("%v: first page %+v, want one fragment and a NextToken", sel, page)
		}
		// The token goes on with stream a.
		e.call(t, "/listFragments", map[string]any{"StreamName": "a", "NextToken": page.NextToken}, nil)
		resp := e.post(t, t.Context(), "/listFragments", map[string]any{"StreamName": "b", "NextToken": page.NextToken})
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || resp.Header.Get("x-amzn-ErrorType") != "InvalidArgumentException" {
			t.Errorf("%v: stream a's NextToken for stream b: %d %s, want 400 InvalidArgumentException", sel, resp.StatusCode, b)
		}
	}
}

// vanishStore is a Store whose fragment gone reads as not found, as one that retention deleted
// between GetMediaForFragmentList's check and its read.
type vanishStore struct {
	store.Store
	gone atomic.Uint64
}

func (s *vanishStore) AppendPayload(ctx context.Context, stream string, n uint64, b []byte) ([]byte, store.FragmentMeta, error) {
	if n == s.gone.Load() {
		return b, store.FragmentMeta{}, store.ErrFragmentNotFound
	}
	return s.Store.AppendPayload(ctx, stream, n, b)
}

// storeDirect appends payloads to stream in st as fragments a second apart from baseMillis, not
// through PutMedia, so that they are read from the store, not a live buffer, and returns their
// numbers.
func storeDirect(t testing.TB, st store.Store, stream string, payloads ...[]byte) []uint64 {
	t.Helper()
	var nums []uint64
	for i, payload := range payloads {
		n, err := st.NextNumber(t.Context(), stream)
		if err == nil {
			at := time.UnixMilli(baseMillis + int64(i)*1000)
			err = store.Append(t.Context(), st, stream, store.FragmentMeta{Number: n, ServerTime: at, ProducerTime: at, Duration: time.Second}, payload)
		}
		if err != nil {
			t.Fatal(err)
		}
		nums = append(nums, n)
	}
	return nums
}

// GetMediaForFragmentList's answer has a Content-Length, and keeps it when a fragment disappears
// after the check: its error chunk is padded with a Void to the size of the chunk it stands for,
// and the fragments after it still follow. A chunk too small to hold the error chunk cuts the
// answer short instead.
func TestGetMediaForFragmentListLength(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			vs := &vanishStore{Store: openStore(t, kind)}
			e := newMediaEnvStore(t, vs)
			e.createStream(t, "cam", 1)
			nums := storeDirect(t, vs, "cam",
				append(c.header(), c.cluster(t, 0, baseMillis)...),
				append(c.header(), c.cluster(t, 1, baseMillis)...),
				append(c.header(), c.cluster(t, 2, baseMillis)...),
				[]byte("tiny"))
			get := func(numbers ...uint64) (*http.Response, []byte, error) {
				var in []string
				for _, n := range numbers {
					in = append(in, formatFragmentNumber(n))
				}
				resp := e.post(t, t.Context(), "/getMediaForFragmentList", map[string]any{"StreamName": "cam", "Fragments": in})
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				b, err := io.ReadAll(resp.Body)
				return resp, b, err
			}

			resp, whole, err := get(nums[:3]...)
			if err != nil || resp.ContentLength != int64(len(whole)) {
				t.Fatalf("Content-Length %d, %d bytes read (%v)", resp.ContentLength, len(whole), err)
			}
			vs.gone.Store(nums[1])
			resp, padded, err := get(nums[:3]...)
			if err != nil || resp.ContentLength != int64(len(whole)) || len(padded) != len(whole) {
				t.Fatalf("with fragment %d gone: Content-Length %d, %d bytes read (%v); want %d", nums[1], resp.ContentLength, len(padded), err, len(whole))
			}
			frags := readFragments(t, bytes.NewReader(padded))
			if len(frags) != 3 {
				t.Fatalf("%d chunks, want 3", len(frags))
			}
			for i, f := range frags {
				ce := client.ChunkErrorOf(f)
				switch {
				case i == 1 && (ce == nil || ce.Code != "FRAGMENT_NOT_FOUND" || tag(t, f, mkv.TagFragmentNumber) != formatFragmentNumber(nums[1])):
					t.Errorf("chunk 1: %+v, want the error chunk FRAGMENT_NOT_FOUND of %d", ce, nums[1])
				case i != 1 && len(f.Frames) != len(c.frags[i]):
					t.Errorf("chunk %d: %d frames, want %d", i, len(f.Frames), len(c.frags[i]))
				}
			}

			vs.gone.Store(nums[3])
			resp, short, err := get(nums[0], nums[3])
			if !errors.Is(err, io.ErrUnexpectedEOF) || int64(len(short)) >= resp.ContentLength {
				t.Errorf("with the 4-byte fragment gone: %d of %d bytes, %v; want the answer cut short", len(short), resp.ContentLength, err)
			}
		})
	}
}
