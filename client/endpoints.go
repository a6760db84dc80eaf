package client

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

// endpointRing is the control-plane endpoints of a Client: one, or the nodes of a kvs cluster.
// Calls go to the current one; an endpoint that cannot be reached makes the next one current, and
// the call is tried there at once.
type endpointRing struct {
	urls []string
	cur  atomic.Int64
}

// parseEndpoints splits Config.Endpoint: one URL, or several separated by commas.
func parseEndpoints(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSuffix(strings.TrimSpace(e), "/")
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("client: endpoint %q: want http(s)://host[:port]", e)
		}
		out = append(out, e)
	}
	return out, nil
}

func (r *endpointRing) current() string { return r.urls[int(r.cur.Load())%len(r.urls)] }

// next makes the endpoint after the one that failed (index was current) current, unless another
// call moved on already.
func (r *endpointRing) next(failed string) {
	i := r.cur.Load()
	if r.urls[int(i)%len(r.urls)] == failed {
		r.cur.CompareAndSwap(i, i+1)
	}
}

// ResolveEndpoint implements kinesisvideo.EndpointResolverV2: the current endpoint.
func (r *endpointRing) ResolveEndpoint(_ context.Context, _ kinesisvideo.EndpointParameters) (smithyendpoints.Endpoint, error) {
	u, err := url.Parse(r.current())
	if err != nil {
		return smithyendpoints.Endpoint{}, err
	}
	return smithyendpoints.Endpoint{URI: *u}, nil
}

// failoverRetryer tries the next endpoint at once, instead of failing, when the current one cannot
// be reached, until every endpoint had its try; everything else is decided by the wrapped
// retryer.
type failoverRetryer struct {
	aws.RetryerV2
	ring *endpointRing
}

func (r failoverRetryer) IsErrorRetryable(err error) bool {
	if unreachable(err) {
		r.ring.next(r.ring.current())
		return true
	}
	return r.RetryerV2.IsErrorRetryable(err)
}

func (r failoverRetryer) MaxAttempts() int { return max(r.RetryerV2.MaxAttempts(), len(r.ring.urls)) }

func (r failoverRetryer) RetryDelay(attempt int, err error) (time.Duration, error) {
	if unreachable(err) {
		return 0, nil // another node, not the same one later
	}
	return r.RetryerV2.RetryDelay(attempt, err)
}

// forgetDataEndpoint drops the cached DataEndpoint of (stream, api): a connection to it broke, and
// on a cluster the stream may be written by another node now.
func (c *Client) forgetDataEndpoint(stream string, api string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.endpoints {
		if k.stream == stream && string(k.api) == api {
			delete(c.endpoints, k)
		}
	}
}
