package client

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/server"
)

// A device whose clock is an hour behind the server's (a camera without a real-time clock) signs
// its own PutMedia, GetMedia and GetMediaForFragmentList requests at the server's time, as the
// SDK's clients do theirs: kvs server --auth sigv4, like AWS, refuses a signature 15 minutes off.
// Before, the control-plane calls passed and every media request failed with 403
// InvalidSignatureException "Signature expired", which the producer took as final.
func TestSignsAtServerClock(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64 // how far the server's clock is ahead of the test's
	serverNow := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	dated := func(h http.Handler) http.Handler { // the Date header from the server's clock
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", serverNow().UTC().Format(http.TimeFormat))
			h.ServeHTTP(w, r)
		})
	}
	m := startMediaConfig(t, server.Config{Now: serverNow, Credentials: server.Credentials{"AKIDCAM": "cam-secret"}}, dated, nil)
	c, err := New(t.Context(), Config{Endpoint: m.URL, HTTPClient: m.client.httpClient,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDCAM", "cam-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	m.client = c
	m.createStream(t, "cam", 24)
	// The data endpoints are known before the clocks part: the first media request is then the
	// first to meet the skew, and is refused once.
	for _, api := range []types.APIName{types.APINamePutMedia, types.APINameGetMedia, types.APINameGetMediaForFragmentList} {
		if _, err := c.DataEndpoint(t.Context(), "cam", api); err != nil {
			t.Fatal(err)
		}
	}
	skew.Store(int64(time.Hour))

	frags := clipFragments(t, "h264.mkv", time.Second)
	if _, err := produce(t, c, ProducerConfig{Stream: "cam", MaxAttempts: 2}, frags); err != nil {
		t.Fatalf("producer an hour behind the server: %v", err)
	}
	if got := consumeAll(t, c, "cam"); len(got) != len(frags) {
		t.Fatalf("GetMedia read %d fragments, want %d", len(got), len(frags))
	}
	list, err := c.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam", Start: time.Now().Add(-time.Hour), End: time.Now().Add(3 * time.Hour)})
	if err != nil || len(list) == 0 {
		t.Fatalf("ListFragments: %d, %v", len(list), err)
	}
	mb, err := c.GetMediaForFragmentList(t.Context(), "cam", []string{list[0].FragmentNumber})
	if err != nil {
		t.Fatalf("GetMediaForFragmentList an hour behind the server: %v", err)
	}
	if n, err := io.Copy(io.Discard, mb); err != nil || n == 0 {
		t.Fatalf("GetMediaForFragmentList body: %d bytes, %v", n, err)
	}
	mb.Close()
}
