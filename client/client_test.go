package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

func TestMain(m *testing.M) {
	testutil.IsolateAWS()
	testutil.WaitingTests(8) // producers and consumers waiting out backoffs, staleness and spool pacing
	os.Exit(m.Run())
}

// newKVS starts a kvs server and counts the requests per path.
func newKVS(t *testing.T) (*httptest.Server, map[string]*atomic.Int64) {
	t.Helper()
	st := store.NewMem()
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]*atomic.Int64{"/getDataEndpoint": {}, "/createStream": {}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := counts[r.URL.Path]; c != nil {
			c.Add(1)
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=") {
			t.Errorf("%s: unsigned request", r.URL.Path)
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	return ts, counts
}

func TestNewLocalWithoutCredentials(t *testing.T) {
	t.Parallel()
	ts, counts := newKVS(t)
	c, err := New(t.Context(), Config{Endpoint: ts.URL + "/", HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.cfg.Region; got != DefaultRegion {
		t.Errorf("region = %q, want %q", got, DefaultRegion)
	}
	creds, err := c.cfg.Credentials.Retrieve(t.Context())
	if err != nil || creds.AccessKeyID != localAccessKeyID {
		t.Errorf("credentials = %v, %v; want the local dummy", creds.AccessKeyID, err)
	}
	if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("s")}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ep, err := c.DataEndpoint(t.Context(), "s", types.APINamePutMedia)
		if err != nil || ep != ts.URL {
			t.Fatalf("DataEndpoint = %q, %v; want %q", ep, err, ts.URL)
		}
	}
	if n := counts["/getDataEndpoint"].Load(); n != 1 {
		t.Errorf("%d GetDataEndpoint calls, want 1 (cached)", n)
	}
	if _, err := c.DataEndpoint(t.Context(), "missing", types.APINameGetMedia); err == nil {
		t.Error("DataEndpoint of a missing stream succeeded")
	}
	desc, err := c.Control.DescribeStream(t.Context(), &kinesisvideo.DescribeStreamInput{StreamName: aws.String("s")})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.DataEndpoint(t.Context(), aws.ToString(desc.StreamInfo.StreamARN), types.APINameGetMedia)
	if err != nil || ep != ts.URL {
		t.Errorf("DataEndpoint by ARN = %q, %v", ep, err)
	}
}

func TestNewUsesConfiguredCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", "eu-central-1")
	c, err := New(t.Context(), Config{Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := c.cfg.Credentials.Retrieve(t.Context())
	if err != nil || creds.AccessKeyID != "AKIDFROMENV" {
		t.Errorf("credentials = %v, %v", creds.AccessKeyID, err)
	}
	if r := c.cfg.Region; r != "eu-central-1" {
		t.Errorf("region = %q", r)
	}
	c, err = New(t.Context(), Config{Endpoint: "http://127.0.0.1:1", Region: "ap-south-1"})
	if err != nil || c.cfg.Region != "ap-south-1" {
		t.Errorf("explicit region: %v", err)
	}
}

func TestNewAWSEndpointKeepsChain(t *testing.T) {
	t.Parallel()
	c, err := New(t.Context(), Config{Endpoint: "https://kinesisvideo.us-west-2.amazonaws.com", Region: "us-west-2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cfg.Credentials.Retrieve(t.Context()); err == nil {
		t.Error("AWS endpoint got credentials from nowhere")
	}
}

func TestNewBadEndpoint(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{"127.0.0.1:4567", "ftp://x", "http://", "://"} {
		if _, err := New(t.Context(), Config{Endpoint: ep}); err == nil {
			t.Errorf("New(%q) succeeded", ep)
		}
	}
}

func TestIsAWSHost(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"kinesisvideo.us-east-1.amazonaws.com": true, "s-1.kinesisvideo.cn-north-1.amazonaws.com.cn": true,
		"amazonaws.com": true, "127.0.0.1": false, "localhost": false, "notamazonaws.com": false, "kvs.example.com": false,
	} {
		if got := isAWSHost(host); got != want {
			t.Errorf("isAWSHost(%q) = %v", host, got)
		}
	}
}

// countingTransport counts requests per host.
type countingTransport struct {
	mu     sync.Mutex
	byHost map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.byHost[r.URL.Host]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestEndpointFailover: with the nodes of a cluster as the endpoint, a call that cannot reach the
// first node is tried on the next at once, and later calls go straight to the one that answered.
func TestEndpointFailover(t *testing.T) {
	t.Parallel()
	live, _ := newKVS(t)
	dead := "http://" + testutil.RefusedAddr(t) // nothing listens there: connection refused
	tr := &countingTransport{byHost: map[string]int{}}
	c, err := New(t.Context(), Config{Endpoint: dead + ", " + live.URL + "/", HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String(fmt.Sprint("s", i))}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	deadHost, liveHost := strings.TrimPrefix(dead, "http://"), strings.TrimPrefix(live.URL, "http://")
	if tr.byHost[deadHost] != 1 || tr.byHost[liveHost] != 3 {
		t.Fatalf("requests per node %v: want 1 to the dead node (then never again), 3 to the live one", tr.byHost)
	}
	if _, err := New(t.Context(), Config{Endpoint: live.URL + ",ftp://x"}); err == nil {
		t.Fatal("a bad URL in the list: no error")
	}
}

// Credentials that the caller sets are what requests are signed with, also when they cannot be
// had yet when New runs (a role assumed over a network that is not up at boot, a file not written
// yet). New replaced them for good with the local dummy key, so that against a kvs with
// --auth sigv4 every request of the Client was refused.
func TestNewKeepsConfiguredCredentialsThatFailAtFirst(t *testing.T) {
	t.Parallel()
	st := store.NewMem()
	srv, err := server.New(server.Config{Store: st, Credentials: server.Credentials{"AKIDPROGRAM": "program-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	var up atomic.Bool
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		if !up.Load() {
			return aws.Credentials{}, errors.New("the network is not up yet")
		}
		return aws.Credentials{AccessKeyID: "AKIDPROGRAM", SecretAccessKey: "program-secret"}, nil
	})
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client(), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	up.Store(true)
	if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("s")}); err != nil {
		t.Fatalf("CreateStream: %v, want it signed with the configured key", err)
	}
}
