package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	amtypes "github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia/types"
)

// Archived returns a kinesisvideoarchivedmedia client whose BaseEndpoint is the stream's DataEndpoint
// for api (LIST_FRAGMENTS or GET_MEDIA_FOR_FRAGMENT_LIST; kvs and AWS answer the same host for
// both, but the SDK contract is per API). The client is cheap; build one per call.
func (c *Client) Archived(ctx context.Context, stream string, api types.APIName) (*kinesisvideoarchivedmedia.Client, error) {
	ep, err := c.DataEndpoint(ctx, stream, api)
	if err != nil {
		return nil, err
	}
	return kinesisvideoarchivedmedia.NewFromConfig(c.cfg, func(o *kinesisvideoarchivedmedia.Options) {
		o.BaseEndpoint = aws.String(ep)
		// A request that cannot be sent there (on a cluster, the node that wrote the stream
		// died) makes the next call ask GetDataEndpoint again.
		o.HTTPClient = bufferedBodyClient{next: o.HTTPClient, failed: func() { c.forgetDataEndpoint(stream, string(api)) }}
		// ClientLimitExceededException is how KVS throttles (a stream's TPS limits; kvs server's
		// GetImages limit, "retry in a moment"), a code the SDK's standard retryer does not know.
		o.Retryer = failFast(retry.AddWithErrorCodes(o.Retryer, "ClientLimitExceededException"))
	}), nil
}

// TimestampType says which timestamp a time range selects on.
type TimestampType string

// Timestamp types of ListFragments.
const (
	ServerTimestamp   TimestampType = "SERVER_TIMESTAMP"
	ProducerTimestamp TimestampType = "PRODUCER_TIMESTAMP"
)

// FragmentInfo is one ListFragments entry.
type FragmentInfo struct {
	FragmentNumber    string
	SizeBytes         int64
	ProducerTimestamp time.Time
	ServerTimestamp   time.Time
	Length            time.Duration
}

// ListFragmentsInput selects fragments. With a zero Start and End every fragment is listed (the
// range then is the Unix epoch to openEnd, as KVS needs a range).
type ListFragmentsInput struct {
	Stream     string // name, or ARN when it starts with "arn:"
	Start, End time.Time
	Type       TimestampType // "" means ServerTimestamp
	// PageSize is MaxResults per request (default 1000, the maximum).
	PageSize int
	// Enough, when set, is asked before each further page with every fragment listed so far (in
	// the order the pages gave them); true stops the paging there, and ListFragments returns
	// those. It is not asked after the last page.
	Enough func(listed []FragmentInfo) bool
}

// MinTime and MaxTime bound the timestamps the AWS SDK writes correctly: it converts them with
// UnixNano (smithy-go's FormatEpochSeconds), which wraps around outside the years 1678 to 2262
// (9999-12-31 went to the server as a time in 1816). Whole milliseconds, as the SDK sends.
var (
	MinTime = time.Unix(0, math.MinInt64).Truncate(time.Millisecond).Add(time.Millisecond)
	MaxTime = time.Unix(0, math.MaxInt64).Truncate(time.Millisecond)
)

// openEnd is the end of a range left open: MaxTime. Not "a day from now": producer timestamps may
// lie further ahead, as those of a long recording uploaded faster than real time do.
var openEnd = MaxTime

// ListFragments returns every fragment of the selection, following all pages (or those up to
// the page after which in.Enough said so), sorted by fragment
// number (numerically: KVS gives no order, even across pages). Selection is on the fragment start
// timestamp, inclusive at both ends.
func (c *Client) ListFragments(ctx context.Context, in ListFragmentsInput) ([]FragmentInfo, error) {
	am, err := c.Archived(ctx, in.Stream, types.APINameListFragments)
	if err != nil {
		return nil, err
	}
	start, end := in.Start, in.End
	if start.IsZero() {
		start = time.Unix(0, 0)
	}
	if end.IsZero() {
		end = openEnd
	}
	typ := in.Type
	if typ == "" {
		typ = ServerTimestamp
	}
	page := int64(in.PageSize)
	if page <= 0 {
		page = 1000
	}
	req := &kinesisvideoarchivedmedia.ListFragmentsInput{
		MaxResults: aws.Int64(page),
		FragmentSelector: &amtypes.FragmentSelector{
			FragmentSelectorType: amtypes.FragmentSelectorType(typ),
			TimestampRange:       &amtypes.TimestampRange{StartTimestamp: aws.Time(start), EndTimestamp: aws.Time(end)},
		},
	}
	if strings.HasPrefix(in.Stream, "arn:") {
		req.StreamARN = aws.String(in.Stream)
	} else {
		req.StreamName = aws.String(in.Stream)
	}
	var out []FragmentInfo
	seen := map[string]bool{}
	pages := kinesisvideoarchivedmedia.NewListFragmentsPaginator(am, req)
	for pages.HasMorePages() {
		resp, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list fragments %s: %w", in.Stream, err)
		}
		for _, f := range resp.Fragments {
			n := aws.ToString(f.FragmentNumber)
			if seen[n] {
				continue
			}
			seen[n] = true
			out = append(out, FragmentInfo{
				FragmentNumber:    n,
				SizeBytes:         f.FragmentSizeInBytes,
				ProducerTimestamp: aws.ToTime(f.ProducerTimestamp),
				ServerTimestamp:   aws.ToTime(f.ServerTimestamp),
				Length:            time.Duration(f.FragmentLengthInMilliseconds) * time.Millisecond,
			})
		}
		if in.Enough != nil && pages.HasMorePages() && in.Enough(out) {
			break
		}
	}
	slices.SortFunc(out, func(a, b FragmentInfo) int { return CompareFragmentNumbers(a.FragmentNumber, b.FragmentNumber) })
	return out, nil
}

// CompareFragmentNumbers orders decimal fragment-number strings numerically (shorter is smaller,
// then lexically), for numbers of any length.
func CompareFragmentNumbers(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// MaxFragmentsPerRequest is the GetMediaForFragmentList limit on fragment numbers per request.
const MaxFragmentsPerRequest = 1000

// GetMediaForFragmentList fetches the given fragments (1 to 1000) with GetMediaForFragmentList
// and returns the streaming body: concatenated MKV chunks in request order, to read with
// mkv.NewFragmentReader. The caller closes it; it is tied to ctx. A non-2xx answer is an *APIError.
//
// The request is a signed POST of its own, not the SDK operation: smithy-go closes the request
// body when the operation returns, and net/http, which still reads that body to EOF after the
// server has answered, then tears down the connection under the streaming response ("use of
// closed network connection" some way into the body; aws/aws-sdk-go-v2#2737).
func (c *Client) GetMediaForFragmentList(ctx context.Context, stream string, numbers []string) (*MediaBody, error) {
	return c.getMediaForFragmentList(ctx, stream, numbers, false)
}

// GetMediaForFragmentListForFile is GetMediaForFragmentList for an answer that goes to a file
// with MediaBody.WriteToFile, unread: over plain HTTP to a kvs server, stored fragments then go
// from the server's disk cache to the file without passing through user space at either end
// (sendfile on the server, splice here; mediabody.go). Elsewhere it is GetMediaForFragmentList.
func (c *Client) GetMediaForFragmentListForFile(ctx context.Context, stream string, numbers []string) (*MediaBody, error) {
	return c.getMediaForFragmentList(ctx, stream, numbers, true)
}

func (c *Client) getMediaForFragmentList(ctx context.Context, stream string, numbers []string, forFile bool) (*MediaBody, error) {
	if len(numbers) == 0 || len(numbers) > MaxFragmentsPerRequest {
		return nil, fmt.Errorf("get media for fragment list %s: %d fragments, want 1 to %d", stream, len(numbers), MaxFragmentsPerRequest)
	}
	ep, err := c.DataEndpoint(ctx, stream, types.APINameGetMediaForFragmentList)
	if err != nil {
		return nil, err
	}
	in := map[string]any{"Fragments": numbers}
	if strings.HasPrefix(stream, "arn:") {
		in["StreamARN"] = stream
	} else {
		in["StreamName"] = stream
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep+"/getMediaForFragmentList", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("get media for fragment list %s: %w", stream, err)
	}
	req.Header.Set("Content-Type", "application/json")
	raw := forFile && c.rawUsable(req)
	if raw {
		req.Header.Set(HeaderSendfile, "1")
	}
	if err := c.Sign(ctx, req, body); err != nil {
		return nil, err
	}
	var resp *http.Response
	if raw {
		var mb *MediaBody
		mb, resp, err = c.doRaw(req, body)
		if mb != nil {
			return mb, nil
		}
	} else {
		resp, err = c.do(req)
	}
	if err != nil {
		// The next call asks where the stream is served now (a cluster node may have died).
		c.forgetDataEndpoint(stream, string(types.APINameGetMediaForFragmentList))
		return nil, fmt.Errorf("get media for fragment list %s: %w", stream, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, fmt.Errorf("get media for fragment list %s: %w", stream, newAPIError("GetMediaForFragmentList", resp))
	}
	return &MediaBody{r: resp.Body, Length: resp.ContentLength}, nil
}
