package server

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"
)

// offsetClock is the wall clock moved by an offset, for a live session that expires while a
// player plays it.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// TestPlaybackSessionRefusals: the HLS and DASH GETs answer an expired session as KVS does, 403
// NotAuthorizedException "Streaming session token is expired" (a KVS user's report; the error's
// documentation: "or the token has expired"), and keep 404 ResourceNotFoundException for a token
// the server did not sign and for a deleted stream's session.
func TestPlaybackSessionRefusals(t *testing.T) {
	testutil.Slow(t) // three DASH refusals wait dashRefusalPause
	t.Parallel()
	clock := &offsetClock{}
	e := newMediaEnv(t, "mem", func(c *Config) { c.Now = clock.Now })
	arn := e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(3)...)
	hls, code := e.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	dash, code := e.dashURL(t, onDemandHour("cam", "DASHFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	get := func(url string) (int, string, string) {
		t.Helper()
		resp := httpOpen(t, url)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), string(b)
	}
	urls := map[string]string{"HLS": hls, "DASH": dash}
	for name, url := range urls {
		if status, _, body := get(url); status != 200 {
			t.Fatalf("%s session before expiry: %d %s", name, status, body)
		}
		tampered := url[:len(url)-2] + map[bool]string{true: "AA", false: "AB"}[strings.HasSuffix(url, "AB")]
		if status, typ, _ := get(tampered); status != 404 || typ != codeResourceNotFound {
			t.Errorf("%s with a forged token: %d %s, want 404 %s", name, status, typ, codeResourceNotFound)
		}
	}
	clock.offset.Store(int64(301 * time.Second)) // past the default Expires
	for name, url := range urls {
		if status, typ, body := get(url); status != 403 || typ != codeNotAuthorized || !strings.Contains(body, "Streaming session token is expired") {
			t.Errorf("%s after expiry: %d %s %s, want 403 %s \"Streaming session token is expired\"", name, status, typ, body, codeNotAuthorized)
		}
	}
	clock.offset.Store(0)
	e.deleteStream(t, arn)
	for name, url := range urls {
		if status, typ, _ := get(url); status != 404 || typ != codeResourceNotFound {
			t.Errorf("%s of a deleted stream: %d %s, want 404 %s", name, status, typ, codeResourceNotFound)
		}
	}
}

// TestDASHExpiredSessionPaced: ffmpeg plays a live DASH session until it expires. ffmpeg's DASH
// reader never ends a live session: it asks for the manifest and the next segment again after
// every refusal, whatever the status, and got 26,170 pairs of instant answers in 8 s. Refusals
// now take dashRefusalPause, so it asks about once a second (the bound is a hundred times that).
func TestDASHExpiredSessionPaced(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	clock := &offsetClock{}
	e := newMediaEnv(t, "mem", func(c *Config) { c.Now = clock.Now })
	pc, c, base := startLive(t, e)
	url, code := e.dashURL(t, map[string]any{"StreamName": "cam", "MaxManifestFragmentResults": 3})
	if code != "" {
		t.Fatal(code)
	}
	var expired atomic.Bool
	var refused, played atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !expired.Load() {
			played.Add(1)
		} else {
			refused.Add(1)
		}
		e.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	produced := produceLive(ctx, pc, c, base, 2)
	cmd := exec.CommandContext(ctx, testutil.NeedTool(t, "ffmpeg"), "-nostdin", "-v", "quiet", "-i", strings.Replace(url, e.ts.URL, front.URL, 1), "-f", "null", "-")
	testutil.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	time.Sleep(3 * time.Second) // ffmpeg plays
	clock.offset.Store(int64(301 * time.Second))
	expired.Store(true)
	time.Sleep(4 * time.Second) // and meets the expired session
	cancel()
	<-produced
	<-done
	if played.Load() < 3 {
		t.Fatalf("ffmpeg made %d requests before the session expired, want it playing", played.Load())
	}
	n := refused.Load()
	t.Logf("ffmpeg made %d requests in the 4 s after the session expired", n) // README's figure
	if n > 400 {
		t.Errorf("ffmpeg made %d requests in 4 s after the session expired, want them paced (a pair a second or so)", n)
	}
}

// streamLookupFault fails GetStream with an I/O error while failing is set, as a store whose
// index cannot be read (a cluster's PostgreSQL down) does.
type streamLookupFault struct {
	store.Store
	failing atomic.Bool
}

func (s *streamLookupFault) GetStream(ctx context.Context, name string) (store.Stream, error) {
	if s.failing.Load() {
		return store.Stream{}, &fs.PathError{Op: "read", Path: "/data/index", Err: syscall.EIO}
	}
	return s.Store.GetStream(ctx, name)
}

// TestHLSSessionStoreFailure: while the store cannot look the session's stream up, the HLS GETs
// answer 500 InternalFailure, which players retry, and play on afterwards. They answered 404 "The
// stream of the streaming session is not found or not active.", which hls.js does not retry: a
// moment's store failure ended playback as if the stream were deleted.
func TestHLSSessionStoreFailure(t *testing.T) {
	t.Parallel()
	st := &streamLookupFault{Store: openStore(t, "mem")}
	e := newMediaEnvStore(t, st)
	e.createStream(t, "cam", 24)
	uploadClip(t, e, "cam", "h264.mkv", seq(3)...)
	url, code := e.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	st.failing.Store(true)
	resp := httpOpen(t, url)
	resp.Body.Close()
	if resp.StatusCode != 500 || resp.Header.Get("x-amzn-ErrorType") != codeInternalFailure {
		t.Errorf("master playlist while the store fails: %d %s, want 500 %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), codeInternalFailure)
	}
	st.failing.Store(false)
	if resp = httpOpen(t, url); resp.StatusCode != 200 {
		t.Errorf("master playlist once the store works: %d, want 200", resp.StatusCode)
	}
	resp.Body.Close()
}
