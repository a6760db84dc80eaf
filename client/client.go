// Package client is the Go client for kvs and for Amazon Kinesis Video Streams: the modeled
// control-plane operations through aws-sdk-go-v2 (Client.Control), GetDataEndpoint with a cache,
// and (in other files) PutMedia and GetMedia, which the SDKs do not model.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
)

// DefaultRegion is used when neither Config.Region nor the AWS configuration names one.
const DefaultRegion = "us-east-1"

// Region returns region, else the AWS configuration's (AWS_REGION, the profile's), else
// DefaultRegion: the region New signs with for a Config.Region of region.
func Region(ctx context.Context, region string) string {
	if region != "" {
		return region
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	if err != nil || awsCfg.Region == "" {
		return DefaultRegion
	}
	return awsCfg.Region
}

// Dummy credentials used for local endpoints when no AWS credentials are configured; kvs accepts
// any signature.
const (
	localAccessKeyID     = "AKIAKVSLOCALDUMMYKEY"
	localSecretAccessKey = "kvs-local-dummy-secret"
)

// Config configures a Client.
type Config struct {
	// Endpoint is the control-plane URL, e.g. "http://127.0.0.1:4567". Empty: the AWS endpoint of
	// the region (or AWS_ENDPOINT_URL* from the environment, as the SDK reads them). Several URLs
	// separated by commas are the nodes of a kvs cluster: a call that cannot reach one goes to the
	// next.
	Endpoint string
	// Region signs requests (default: the AWS configuration's region, else DefaultRegion).
	Region string
	// HTTPClient carries every request (default: the SDK's client, which honours AWS_CA_BUNDLE).
	// Set it for custom TLS (a private CA for an https kvs) or for tests; it is used as given.
	HTTPClient *http.Client
	// Credentials sign requests (default: the AWS configuration's chain — environment, shared
	// files, ... — and for a kvs endpoint with none configured, a fixed local key, which a server
	// without --auth accepts). Set it to sign with keys the program holds.
	Credentials aws.CredentialsProvider
}

// Client talks to one KVS endpoint. It is safe for concurrent use.
type Client struct {
	// Control is the kinesisvideo control-plane client (CreateStream, DescribeStream, ...), with
	// BaseEndpoint set to Config.Endpoint.
	Control *kinesisvideo.Client

	cfg        aws.Config
	httpClient *http.Client

	skew atomic.Int64 // ns the servers' clock is ahead of ours, when over skewThreshold (clock.go)

	mu        sync.Mutex
	endpoints map[endpointKey]string

	raw rawExchange // GetMediaForFragmentListForFile's connections
}

type endpointKey struct {
	stream string
	api    types.APIName
}

// New loads the AWS configuration (config.LoadDefaultConfig: environment, shared files, SSO, ...)
// for cfg.Region and builds the control-plane client.
//
// Credentials: for a local endpoint (any host that is not *.amazonaws.com[.cn]) where no usable
// credentials are configured (and Config.Credentials is nil), New falls back to static dummy credentials, so that local use needs
// no AWS setup at all; kvs does not check signatures. The EC2 instance-metadata source is disabled
// for local endpoints, so that the check does not wait for a metadata service that is not there.
// For AWS endpoints the SDK's normal credential chain applies unchanged, and a missing credential
// shows up as an error on the first request.
//
// Retries: the SDK's retryer (3 attempts by default, or as the AWS configuration sets) applies,
// except that an unreachable endpoint (connection refused, a TLS certificate that does not verify,
// plain HTTP at an https:// URL, an unknown host) fails at the first attempt, in the control-plane
// client and in the clients Archived returns.
func New(ctx context.Context, cfg Config) (*Client, error) {
	local := false
	urls, err := parseEndpoints(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if len(urls) > 0 {
		u, _ := url.Parse(urls[0])
		local = !isAWSHost(u.Hostname())
	}
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if local {
		opts = append(opts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: aws config: %w", err)
	}
	if cfg.HTTPClient != nil {
		// Set after loading, not with config.WithHTTPClient: the loader would try to add
		// AWS_CA_BUNDLE to the client's transport and fail on a plain *http.Client. The caller's
		// client is used as given.
		awsCfg.HTTPClient = cfg.HTTPClient
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	if cfg.Credentials != nil {
		awsCfg.Credentials = aws.NewCredentialsCache(cfg.Credentials)
	}
	// The fallback is for a configuration that has no credentials, never for the caller's own
	// provider: one that fails at this moment (a network not up yet at boot) may work at the first
	// request, and a dummy key in its place would be refused by a kvs with --auth sigv4 for good.
	if local && cfg.Credentials == nil && !haveCredentials(ctx, awsCfg.Credentials) {
		awsCfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(localAccessKeyID, localSecretAccessKey, ""))
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = credentialsProvider{awsCfg.Credentials}
	}
	c := &Client{httpClient: cfg.HTTPClient, endpoints: map[endpointKey]string{}}
	if awsCfg.HTTPClient == nil {
		awsCfg.HTTPClient = http.DefaultClient
	}
	awsCfg.HTTPClient = dateClient{HTTPClient: awsCfg.HTTPClient, c: c}
	c.cfg = awsCfg
	c.Control = kinesisvideo.NewFromConfig(awsCfg, func(o *kinesisvideo.Options) {
		o.Retryer = failFast(o.Retryer)
		switch {
		case len(urls) == 1:
			o.BaseEndpoint = aws.String(urls[0])
		case len(urls) > 1:
			ring := &endpointRing{urls: urls}
			o.BaseEndpoint = aws.String(urls[0])
			o.EndpointResolverV2 = ring
			o.Retryer = failoverRetryer{RetryerV2: o.Retryer.(aws.RetryerV2), ring: ring}
		}
	})
	return c, nil
}

// isAWSHost reports whether host belongs to AWS (where real credentials are needed).
func isAWSHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, suffix := range []string{"amazonaws.com", "amazonaws.com.cn", "api.aws"} {
		if host == suffix || strings.HasSuffix(host, "."+suffix) {
			return true
		}
	}
	return false
}

// haveCredentials reports whether p yields credentials.
func haveCredentials(ctx context.Context, p aws.CredentialsProvider) bool {
	if p == nil {
		return false
	}
	creds, err := p.Retrieve(ctx)
	return err == nil && creds.HasKeys()
}

// DataEndpoint returns the endpoint (scheme://host[:port], no trailing slash) that serves api for
// stream, from GetDataEndpoint. stream is a stream name, or a stream ARN if it starts with "arn:".
// Answers are cached per stream and API (the KVS producer SDKs cache it for 40 minutes) until a
// connection to the endpoint breaks: Producer, Consumer, ListFragments, GetMediaForFragmentList
// and the clients Archived returns then ask again, since on a kvs cluster the stream may be
// written by another node by then. Errors are not cached.
func (c *Client) DataEndpoint(ctx context.Context, stream string, api types.APIName) (string, error) {
	key := endpointKey{stream, api}
	c.mu.Lock()
	ep, ok := c.endpoints[key]
	c.mu.Unlock()
	if ok {
		return ep, nil
	}
	in := &kinesisvideo.GetDataEndpointInput{APIName: api}
	if strings.HasPrefix(stream, "arn:") {
		in.StreamARN = aws.String(stream)
	} else {
		in.StreamName = aws.String(stream)
	}
	out, err := c.Control.GetDataEndpoint(ctx, in)
	if err != nil {
		return "", fmt.Errorf("get data endpoint %s %s: %w", stream, api, err)
	}
	ep = strings.TrimSuffix(aws.ToString(out.DataEndpoint), "/")
	if ep == "" {
		return "", fmt.Errorf("get data endpoint %s %s: %w", stream, api, errEmptyEndpoint)
	}
	c.mu.Lock()
	c.endpoints[key] = ep
	c.mu.Unlock()
	return ep, nil
}

var errEmptyEndpoint = errors.New("empty DataEndpoint in response")

// TLSConfig returns a copy of the TLS settings the client's requests use: Config.HTTPClient's
// transport's, or the SDK's (which carries AWS_CA_BUNDLE), for callers that open their own
// connections to the same endpoints (kvs bench writes PutMedia on raw connections); nil when the
// transport is not an *http.Transport or sets none (Go's defaults: the system's roots).
func (c *Client) TLSConfig() *tls.Config {
	var tr *http.Transport
	var hc aws.HTTPClient = c.cfg.HTTPClient
	if d, ok := hc.(dateClient); ok {
		hc = d.HTTPClient
	}
	switch h := hc.(type) {
	case *http.Client:
		tr, _ = h.Transport.(*http.Transport)
	case interface{ GetTransport() *http.Transport }: // the SDK's awshttp.BuildableClient
		tr = h.GetTransport()
	}
	if tr == nil || tr.TLSClientConfig == nil {
		return nil
	}
	return tr.TLSClientConfig.Clone()
}
