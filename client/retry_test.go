package client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// dialLog is an HTTP client transport that counts the connections it tries to open, per address,
// and refuses a dial (ECONNREFUSED, as when nothing listens) while refuse says so. Keep-alive is
// off, so that every request dials.
type dialLog struct {
	mu      sync.Mutex
	dials   map[string]int
	refused int
	refuse  func(refused int) bool // nil: never
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (d *dialLog) client(tlsConfig *tls.Config) *http.Client {
	var dialer net.Dialer
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   tlsConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.mu.Lock()
			if d.dials == nil {
				d.dials = map[string]int{}
			}
			d.dials[addr]++
			refuse := d.refuse != nil && d.refuse(d.refused)
			if refuse {
				d.refused++
			}
			d.mu.Unlock()
			if refuse {
				return nil, errRefused
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}}
}

func (d *dialLog) refusals() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refused
}

func (d *dialLog) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[addr]
}

// startKVSAdvertising starts kvs on httptest with GetDataEndpoint answering advertise ("" for its
// own URL), wrap around its handler, and a stream "cam" with retention.
func startKVSAdvertising(t *testing.T, advertise string, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	st := store.NewMem()
	srv, err := server.New(server.Config{Store: st, AdvertiseURL: advertise})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(24)}); err != nil {
		t.Fatal(err)
	}
	return ts
}

// An unreachable endpoint is tried once, by the SDK's modeled operations and by the media APIs'
// own connections alike: there are no retries with backoff before the error.
func TestUnreachableFailsFast(t *testing.T) {
	t.Parallel()
	dead := testutil.RefusedAddr(t)                   // a port held for the test, where nothing listens
	ts := startKVSAdvertising(t, "http://"+dead, nil) // the data endpoint refuses
	tlsServer := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsServer.Close)
	tlsAddr := tlsServer.Listener.Addr().String()
	frags := clipFragments(t, "h264.mkv", time.Second)

	cases := []struct {
		name     string
		endpoint string
		addr     string // where the dials are counted
		call     func(ctx context.Context, c *Client) error
		want     func(error) bool
	}{
		{"control plane, connection refused", "http://" + dead, dead, func(ctx context.Context, c *Client) error {
			_, err := c.Control.ListStreams(ctx, &kinesisvideo.ListStreamsInput{})
			return err
		}, isRefused},
		{"control plane, untrusted certificate", tlsServer.URL, tlsAddr, func(ctx context.Context, c *Client) error {
			_, err := c.Control.ListStreams(ctx, &kinesisvideo.ListStreamsInput{})
			return err
		}, func(err error) bool { var ce *tls.CertificateVerificationError; return errors.As(err, &ce) }},
		{"ListFragments at a refusing data endpoint", ts.URL, dead, func(ctx context.Context, c *Client) error {
			_, err := c.ListFragments(ctx, ListFragmentsInput{Stream: "cam"})
			return err
		}, isRefused},
		{"GetMediaForFragmentList at a refusing data endpoint", ts.URL, dead, func(ctx context.Context, c *Client) error {
			_, err := c.GetMediaForFragmentList(ctx, "cam", []string{"1"})
			return err
		}, isRefused},
		{"GetMedia at a refusing data endpoint", ts.URL, dead, func(ctx context.Context, c *Client) error {
			cons, err := NewConsumer(c, ConsumerConfig{Stream: "cam", NoFollow: true})
			if err != nil {
				return err
			}
			defer cons.Close()
			_, err = cons.Next(ctx)
			return err
		}, isRefused},
		{"PutMedia at a refusing data endpoint", ts.URL, dead, func(ctx context.Context, c *Client) error {
			p, err := NewProducer(c, ProducerConfig{Stream: "cam"})
			if err != nil {
				return err
			}
			_ = p.Send(ctx, frags[0]) // queued; the connection fails in the background
			err = p.Close(ctx)
			var pe *ProducerError
			if !errors.As(err, &pe) || len(pe.Failed) != 1 {
				t.Errorf("Close: %v, want a *ProducerError with the fragment failed", err)
			}
			return err
		}, isRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var dl dialLog
			c, err := New(t.Context(), Config{Endpoint: tc.endpoint, HTTPClient: dl.client(nil)})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(t.Context(), c)
			if err == nil || !tc.want(err) {
				t.Fatalf("error %v, not the one expected", err)
			}
			if n := dl.count(tc.addr); n != 1 {
				t.Errorf("%d connection attempts to %s, want 1", n, tc.addr)
			}
		})
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// Once a connection has worked, a refused one is a server restarting: the producer and the
// consumer reconnect with backoff, as after any broken connection.
func TestRefusedAfterConnectingIsRetried(t *testing.T) {
	t.Parallel()
	frags := clipFragments(t, "h264.mkv", time.Second)

	t.Run("producer", func(t *testing.T) {
		cut := &cutListener{after: 12_000}
		cut.armed.Store(true)
		st := store.NewMem()
		srv, err := server.New(server.Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(srv)
		cut.Listener = ts.Listener
		ts.Listener = cut
		ts.Start()
		t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
		// After the cut, the next two connections are refused.
		dl := dialLog{refuse: func(refused int) bool { return !cut.armed.Load() && refused < 2 }}
		c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: dl.client(nil)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Control.CreateStream(t.Context(), &kinesisvideo.CreateStreamInput{StreamName: aws.String("cam"), DataRetentionInHours: aws.Int32(24)}); err != nil {
			t.Fatal(err)
		}
		stats, err := produce(t, c, ProducerConfig{Stream: "cam", RetryBackoff: time.Millisecond}, frags)
		if err != nil {
			t.Fatal(err)
		}
		if dl.refusals() != 2 || stats.Stored != len(frags) {
			t.Errorf("%d connections refused, %d of %d fragments stored: want 2 refused and all stored", dl.refusals(), stats.Stored, len(frags))
		}
	})

	t.Run("consumer", func(t *testing.T) {
		var cutDone sync.Once
		cutHappened := make(chan struct{})
		ts := startKVSAdvertising(t, "", func(h http.Handler) http.Handler {
			h = cutResponse(20_000)(h)
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/getMedia" {
					cutDone.Do(func() { close(cutHappened) }) // the first GetMedia is the one cut
				}
				h.ServeHTTP(w, r)
			})
		})
		c0, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := produce(t, c0, ProducerConfig{Stream: "cam"}, frags); err != nil {
			t.Fatal(err)
		}
		dl := dialLog{refuse: func(refused int) bool {
			select {
			case <-cutHappened:
				return refused < 2
			default:
				return false
			}
		}}
		c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: dl.client(nil)})
		if err != nil {
			t.Fatal(err)
		}
		cons, err := NewConsumer(c, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true, RetryBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		n := countFragments(t, cons, nil)
		if dl.refusals() != 2 || n != len(frags) {
			t.Errorf("%d connections refused, %d of %d fragments read: want 2 refused and all read", dl.refusals(), n, len(frags))
		}
	})
}

// failFast decides the unreachable errors and leaves every other one to the SDK's retryer.
func TestFailFastRetryer(t *testing.T) {
	t.Parallel()
	r := failFast(retry.NewStandard())
	sendErr := func(err error) error {
		return &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "http://127.0.0.1:1/listStreams", Err: err}}
	}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", sendErr(errRefused), false},
		{"untrusted certificate", sendErr(&tls.CertificateVerificationError{Err: errors.New("x509: certificate signed by unknown authority")}), false},
		{"plain HTTP at https", sendErr(http.ErrSchemeMismatch), false},
		{"unknown host", sendErr(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nosuch.invalid", IsNotFound: true}}), false},
		{"connection reset", sendErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"server error", &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}}, Err: errors.New("unavailable")}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.IsErrorRetryable(tc.err); got != tc.want {
				t.Errorf("IsErrorRetryable = %v, want %v", got, tc.want)
			}
		})
	}
}

// A PutMedia answered with an error at once (here by an endpoint that is not kvs, which answers
// 404 and closes the connection without reading the body) ends the upload with that error: the
// body's writer, which may have handed everything to the transport already and be waiting for the
// next fragment, is stopped too.
func TestProducerErrorAnswerBeforeBody(t *testing.T) {
	t.Parallel()
	notKVS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // answer now: do not read the body first
		http.NotFound(w, r)
	}))
	t.Cleanup(notKVS.Close)
	ts := startKVSAdvertising(t, notKVS.URL, nil)
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = produce(t, c, ProducerConfig{Stream: "cam"}, clipFragments(t, "h264.mkv", time.Second)[:1])
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !ae.NotKVS() || ae.Endpoint != notKVS.URL {
		t.Fatalf("Close: %v, want the 404 of %s as an *APIError that is not from KVS", err, notKVS.URL)
	}
}

// A DescribeStream answered with a server error (a kvs cluster's database restarting: 503
// InternalFailure, for as long as the SDK retries) is transient: the producer retries it with its
// own backoff and stores everything, instead of stopping at once as for a client error.
func TestProducerRetriesServerErrorFromControlPlane(t *testing.T) {
	t.Parallel()
	var failures atomic.Int32
	m := startMedia(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/describeStream" && failures.Add(1) <= 3 { // one SDK call: 3 attempts
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("x-amzn-ErrorType", "InternalFailure")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"__type":"InternalFailure","Message":"The cluster's database or object store did not answer; try again."}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	m.createStream(t, "cam", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	st, err := produce(t, m.client, ProducerConfig{Stream: "cam", RetryBackoff: time.Millisecond}, frags)
	if err != nil {
		t.Fatalf("Close: %v, want the 503 retried and every fragment stored", err)
	}
	if failures.Load() <= 3 || st.Stored != len(frags) {
		t.Fatalf("stats %+v after %d DescribeStream requests: want all %d fragments stored after the 503s", st, failures.Load(), len(frags))
	}
}

// A producer with CreateRetentionHours whose DescribeStream said "not found" while another
// producer (or an operator) created the stream a moment later, without retention, finds
// CreateStream answer ResourceInUse: it must wait for the ACK the existing stream sends (RECEIVED
// without retention), not the one its own CreateRetentionHours would have meant (PERSISTED, which
// never comes: Send blocked and Close hung).
func TestProducerCreateRaceUsesExistingRetention(t *testing.T) {
	t.Parallel()
	var describes atomic.Int32
	m := startMedia(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/describeStream" && describes.Add(1) == 1 { // the stream was created just after
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("x-amzn-ErrorType", "ResourceNotFoundException")
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"__type":"ResourceNotFoundException","Message":"The requested stream is not found or not active."}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}, nil)
	m.createStream(t, "live", 0)
	frags := clipFragments(t, "h264.mkv", time.Second)
	p, err := NewProducer(m.client, ProducerConfig{Stream: "live", CreateRetentionHours: aws.Int(24)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if err := p.Send(t.Context(), f); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	// Without retention no PERSISTED ever comes: a producer waiting for one never ends.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v, want every fragment final on its RECEIVED", err)
	}
	if st := p.Stats(); st.Stored != len(frags) {
		t.Fatalf("stats %+v: want all %d fragments stored", st, len(frags))
	}
}

// expiringCredentials gives credentials that expire at once the first time, then fails, as an SSO
// session or an assumed role does when it ends. It counts the failures.
type expiringCredentials struct {
	calls, failures atomic.Int32
}

func (p *expiringCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	if p.calls.Add(1) == 1 {
		return aws.Credentials{AccessKeyID: "AKIDEXPIRING", SecretAccessKey: "s", CanExpire: true, Expires: time.Now()}, nil
	}
	p.failures.Add(1)
	return aws.Credentials{}, errors.New("the SSO session has expired")
}

// Credentials that cannot be had are a *CredentialsError, and GetMedia returns it at once, like
// an unreachable endpoint, instead of retrying it with backoff MaxAttempts times (26 s with the
// default backoff): the request was never sent, and asking the chain again does not change it.
func TestNoCredentialsFailsFast(t *testing.T) {
	t.Parallel()
	ts := startKVSAdvertising(t, "", nil)
	creds := &expiringCredentials{}
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client(), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := NewConsumer(c, ConsumerConfig{Stream: "cam", NoFollow: true, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	_, err = cons.Next(t.Context())
	var ce *CredentialsError
	if !errors.As(err, &ce) {
		t.Fatalf("Next: %v, want a *CredentialsError", err)
	}
	if n := creds.failures.Load(); n != 1 {
		t.Errorf("the credentials were asked for %d times after they failed, want 1", n)
	}
}

// A control-plane call that a producer makes for a connection (DescribeStream before the first,
// GetDataEndpoint before each) and that gets no answer at all (a frozen server, a flow a
// middlebox dropped while TCP stays up) is given up after StalenessTimeout like the connection
// itself, and counts as a failed attempt: the producer gives up after MaxAttempts. Before, the
// SDK's HTTP client, which has no timeout, waited for the answer for ever, and so did Close
// (here it ended only at its own ctx's deadline, with "close: context deadline exceeded").
func TestProducerSilentControlPlaneGivesUp(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/describeStream", "/getDataEndpoint"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			m := startMedia(t, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == path {
						_, _ = io.Copy(io.Discard, r.Body)
						<-r.Context().Done() // never answers
						return
					}
					h.ServeHTTP(w, r)
				})
			}, nil)
			m.createStream(t, "cam", 24)
			p, err := NewProducer(m.client, ProducerConfig{Stream: "cam", StalenessTimeout: 200 * time.Millisecond,
				RetryBackoff: time.Millisecond, MaxAttempts: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Send(t.Context(), clipFragments(t, "h264.mkv", time.Second)[0]); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err = p.Close(ctx)
			var pe *ProducerError
			if !errors.As(err, &pe) || pe.Err == nil || !strings.Contains(pe.Err.Error(), "giving up after 2 attempts") {
				t.Fatalf("Close: %v, want the producer to give up after 2 attempts without an answer", err)
			}
		})
	}
}

// A data endpoint that cannot be reached any more (on a cluster, the node that wrote the stream
// died and another one took it over) is asked for again by the archived-media calls too, as by
// Producer and Consumer: before, ListFragments and GetMediaForFragmentList went on to the cached
// dead endpoint, refused, for as long as the Client lived.
func TestArchivedCallsForgetUnreachableDataEndpoint(t *testing.T) {
	t.Parallel()
	dead := "http://" + testutil.RefusedAddr(t)
	var advertise atomic.Value
	advertise.Store("")
	var ts *httptest.Server
	ts = startKVSAdvertising(t, "", func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getDataEndpoint" {
				ep := advertise.Load().(string)
				if ep == "" {
					ep = ts.URL
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"DataEndpoint":"`+ep+`"}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := produce(t, c, ProducerConfig{Stream: "cam"}, clipFragments(t, "h264.mkv", time.Second)[:1]); err != nil {
		t.Fatal(err)
	}
	c, err = New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	advertise.Store(dead) // the node that writes the stream dies
	if _, err := c.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam"}); !isRefused(err) {
		t.Fatalf("ListFragments at the dead endpoint: %v, want refused", err)
	}
	if _, err := c.GetMediaForFragmentList(t.Context(), "cam", []string{"1"}); !isRefused(err) {
		t.Fatalf("GetMediaForFragmentList at the dead endpoint: %v, want refused", err)
	}
	advertise.Store("") // the stream is served by a live node now
	list, err := c.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam"})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListFragments after the endpoint moved: %d fragments, %v; want 1", len(list), err)
	}
	body, err := c.GetMediaForFragmentList(t.Context(), "cam", []string{list[0].FragmentNumber})
	if err != nil {
		t.Fatalf("GetMediaForFragmentList after the endpoint moved: %v", err)
	}
	body.Close()
}
