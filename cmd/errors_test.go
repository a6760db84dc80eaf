package cmd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/internal/testutil"
)

// closedEndpoint returns an http:// URL where connections are refused (testutil.RefusedAddr).
func closedEndpoint(t *testing.T) string {
	t.Helper()
	return "http://" + testutil.RefusedAddr(t)
}

// dialCounter is an HTTP client that counts the TCP connections it tries to open.
type dialCounter struct{ n atomic.Int32 }

func (d *dialCounter) client() *http.Client {
	var dialer net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.n.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
}

// requestCounter wraps a handler and counts the requests that reach it.
func requestCounter(n *atomic.Int32) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			h.ServeHTTP(w, r)
		})
	}
}

// The errors a user reads: the exact stderr, once, without the SDK's wrappers, with the exit code,
// and without asking the server (or retrying) when that cannot help.
func TestErrorRendering(t *testing.T) {
	t.Parallel()
	const refusedHint = "Start `kvs server`, or point --endpoint (KVS_ENDPOINT) at a running server."
	clip, err := filepath.Abs("../testdata/h264.mkv")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var kvsRequests atomic.Int32
	kvs, _ := e2eServer(t, requestCounter(&kvsRequests))
	notKVS := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notKVS.Close)
	refused := closedEndpoint(t)

	cases := []struct {
		name     string
		endpoint string // {ep} in args and stderr
		args     []string
		code     int
		stderr   string // exact; {ep} is the endpoint, {dir} the temporary directory
		hint     string // appears exactly once
		dials    int32  // connections tried (-1: not checked)
	}{
		{
			name: "connection refused", endpoint: refused, args: []string{"list-streams"}, code: ExitError,
			stderr: "kvs: list-streams: nothing is listening at {ep}\n" + refusedHint + "\n", hint: refusedHint, dials: 1,
		},
		{
			name: "connection refused, describe-stream", endpoint: refused, args: []string{"describe-stream", "--stream-name", "cam"}, code: ExitError,
			stderr: "kvs: describe-stream cam: nothing is listening at {ep}\n" + refusedHint + "\n", hint: refusedHint, dials: 1,
		},
		{
			name: "connection refused, get-media", endpoint: refused, args: []string{"get-media", "--stream-name", "cam", "--no-follow"}, code: ExitError,
			stderr: "kvs: get-media cam: nothing is listening at {ep}\n" + refusedHint + "\n", hint: refusedHint, dials: 1,
		},
		{
			name: "connection refused, put-media", endpoint: refused, args: []string{"put-media", "--stream-name", "cam", "--source", clip}, code: ExitError,
			stderr: "kvs: put-media cam: nothing is listening at {ep}\n" + refusedHint + "\n", hint: refusedHint, dials: 1,
		},
		{
			name: "not a KVS endpoint", endpoint: notKVS.URL, args: []string{"list-streams"}, code: ExitError,
			stderr: "kvs: list-streams: {ep} answered ListStreams with HTTP 404 Not Found, which is not a Kinesis Video Streams answer\n" +
				"Check --endpoint (KVS_ENDPOINT): it should be the URL `kvs server` prints, e.g. http://127.0.0.1:4567.\n",
			hint: "Check --endpoint", dials: -1,
		},
		{
			name: "usage error", endpoint: kvs, args: []string{"list-streams", "--output", "xml"}, code: ExitUsage,
			stderr: "kvs: --output \"xml\": want json or text or table\nRun 'kvs list-streams --help' for usage.\n",
			hint:   "Run 'kvs list-streams --help' for usage.", dials: 0,
		},
		{
			name: "usage error, flag value", endpoint: kvs, args: []string{"list-streams", "--max-results", "ten"}, code: ExitUsage,
			stderr: "kvs: --max-results \"ten\": want a whole number\nRun 'kvs list-streams --help' for usage.\n",
			hint:   "Run 'kvs list-streams --help' for usage.", dials: 0,
		},
		{
			name: "usage error, argument", endpoint: kvs, args: []string{"describe-stream", "cam"}, code: ExitUsage,
			stderr: "kvs: unexpected argument \"cam\": kvs describe-stream takes flags only\nDid you mean --stream-name cam? Run 'kvs describe-stream --help' for usage.\n",
			hint:   "Did you mean --stream-name cam?", dials: 0,
		},
		{
			name: "missing file", endpoint: kvs, args: []string{"put-media", "--stream-name", "cam", "--create", "--source", "{dir}/missing.mkv"}, code: ExitUsage,
			stderr: "kvs: --source {dir}/missing.mkv: no such file or directory\n" + sourceHint + "\n", hint: sourceHint, dials: 0,
		},
		{
			name: "output in a missing directory", endpoint: kvs, args: []string{"get-media", "--stream-name", "cam", "-o", "{dir}/no/out.mkv"}, code: ExitUsage,
			stderr: "kvs: --output-file {dir}/no/out.mkv: directory {dir}/no does not exist\nCreate it first (mkdir -p {dir}/no), or write the file elsewhere.\n",
			hint:   "Create it first", dials: 0,
		},
		{
			name: "stream not found", endpoint: kvs, args: []string{"describe-stream", "--stream-name", "nosuch"}, code: ExitNotFound,
			stderr: "kvs: describe-stream nosuch: ResourceNotFoundException: The requested stream is not found or not active.\n" +
				"Check the name: `kvs list-streams` lists the streams; `kvs create-stream` makes one.\n",
			hint: "`kvs list-streams` lists the streams", dials: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expand := strings.NewReplacer("{ep}", tc.endpoint, "{dir}", dir)
			args := []string{"--endpoint", tc.endpoint}
			for _, a := range tc.args {
				args = append(args, expand.Replace(a))
			}
			env, _, errb := testEnv(t, nil)
			var dials dialCounter
			env.HTTPClient = dials.client()
			before := kvsRequests.Load()

			code := Run(t.Context(), env, args)

			stderr := errb.String()
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if want := expand.Replace(tc.stderr); stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
			}
			if n := strings.Count(stderr, expand.Replace(tc.hint)); n != 1 {
				t.Errorf("hint %q printed %d times", tc.hint, n)
			}
			for _, sdk := range []string{"operation error", "exceeded maximum number of attempts", "StatusCode:", "request send failed"} {
				if strings.Contains(stderr, sdk) {
					t.Errorf("stderr shows the SDK's chain (%q)", sdk)
				}
			}
			if tc.dials >= 0 && dials.n.Load() != tc.dials {
				t.Errorf("%d connection attempts, want %d", dials.n.Load(), tc.dials)
			}
			if tc.endpoint == kvs && tc.dials == 0 {
				if n := kvsRequests.Load() - before; n != 0 {
					t.Errorf("%d request(s) reached the server", n)
				}
			}
		})
	}
}

// At --log-level debug the SDK's whole chain is logged too, once, before the message.
func TestErrorDetailAtDebug(t *testing.T) {
	t.Parallel()
	ep := closedEndpoint(t)
	env, _, errb := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"--endpoint", ep, "--log-level", "debug", "list-streams"}); code != ExitError {
		t.Fatalf("exit code %d", code)
	}
	stderr := errb.String()
	for _, want := range []string{"operation error Kinesis Video: ListStreams", "kvs: list-streams: nothing is listening at " + ep + "\n"} {
		if n := strings.Count(stderr, want); n != 1 {
			t.Errorf("%q appears %d times in\n%s", want, n, stderr)
		}
	}
	if !strings.HasSuffix(stderr, "kvs: list-streams: nothing is listening at "+ep+"\nStart `kvs server`, or point --endpoint (KVS_ENDPOINT) at a running server.\n") {
		t.Errorf("the message is not last:\n%s", stderr)
	}
}

// A file put-media cannot read is a usage error found before the server is asked anything: a
// directory, an empty file, a file in no known format.
func TestPutMediaChecksSourceFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.mkv")
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(text, []byte("not media at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	kvs, _ := e2eServer(t, requestCounter(&requests))
	cases := []struct {
		name, source, stderr string
	}{
		{"directory", dir, "kvs: --source " + dir + " is a directory\n" + sourceHint + "\n"},
		{"empty", empty, "kvs: --source " + empty + " is empty\nRun 'kvs put-media --help' for usage.\n"},
		{"unknown format", text, "kvs: --source " + text + ": not Matroska/WebM (EBML), MP4 (ftyp) or Annex B H.264/H.265 (start code)\n" +
			"Convert it first, e.g. ffmpeg -i IN -c:v libx264 -c:a aac -f matroska out.mkv.\n"},
		{"camera device", "camera:" + filepath.Join(dir, "video9"), "kvs: --source camera:" + filepath.Join(dir, "video9") + ": no such file or directory\n" +
			"`kvs list-devices` lists the cameras; --source camera takes the first one.\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.source, "camera:") {
				if ok, _ := capture.CaptureBuilt(); !ok {
					t.Skip("capture not built in")
				}
			}
			code, _, stderr := kvsRun(t.Context(), t, kvs, nil, "put-media", "--stream-name", "cam", "--create", "--source", tc.source)
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d", code, ExitUsage)
			}
			if stderr != tc.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, tc.stderr)
			}
			if n := requests.Load(); n != 0 {
				t.Errorf("%d request(s) reached the server", n)
			}
		})
	}
}

func TestUsageMessageSuggestions(t *testing.T) {
	t.Parallel()
	env, _, errb := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"list-stream"}); code != ExitUsage {
		t.Fatalf("exit code %d", code)
	}
	want := "kvs: unknown command \"list-stream\" for \"kvs\"\nDid you mean 'kvs list-streams'? Run 'kvs --help' for the commands.\n"
	if errb.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", errb.String(), want)
	}
}

// An SDK error that diagnose does not recognise is shown as "Operation: cause", without the SDK's
// operation, retry and send wrappers.
func TestBriefDropsSDKWrappers(t *testing.T) {
	t.Parallel()
	sdkErr := &smithy.OperationError{ServiceID: "Kinesis Video", OperationName: "ListStreams",
		Err: &retry.MaxAttemptsError{Attempt: 3, Err: &smithyhttp.RequestSendError{Err: errors.New("something odd")}}}
	if got, want := wrapAPI(sdkErr, "list-streams").Error(), "list-streams: ListStreams: something odd"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := wrapAPI(errors.New("plain cause"), "describe-stream cam").Error(), "describe-stream cam: plain cause"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// Ctrl-C while put-media waits for the acks of what it sent ends the wait after interruptGrace,
// also when the data endpoint never answers (before, only Ctrl-C during reading did).
func TestPutMediaInterruptWhileWaitingForAcks(t *testing.T) {
	defer func(g time.Duration) { interruptGrace = g }(interruptGrace)
	interruptGrace = 10 * time.Millisecond
	clip, err := filepath.Abs("../testdata/h264.mkv")
	if err != nil {
		t.Fatal(err)
	}
	uploaded := make(chan struct{})
	kvs, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/putMedia" {
				h.ServeHTTP(w, r)
				return
			}
			// Take both fragments of the clip (about 29 KB) and never answer, until the client
			// goes away.
			_, _ = io.ReadFull(r.Body, make([]byte, 20_000))
			close(uploaded)
			_, _ = io.Copy(io.Discard, r.Body)
		})
	})
	mustRun(t, kvs, nil, "create-stream", "--stream-name", "cam", "--data-retention-in-hours", "1")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		<-uploaded
		cancel() // Ctrl-C
	}()
	if code, _, stderr := kvsRun(ctx, t, kvs, nil, "put-media", "--stream-name", "cam", "--source", clip); code != ExitInterrupted {
		t.Errorf("exit code %d, want %d (stderr %q)", code, ExitInterrupted, stderr)
	}
}

// A source that fails while put-media reads it, against an endpoint that never acknowledges:
// after the grace, put-media says what failed (the file) and that the fragments sent were not
// acknowledged, with exit 1. It ended with exit 130 and nothing on stderr, as if interrupted:
// the grace's end reached exitCode as context.Canceled.
func TestPutMediaReadErrorWhileWaitingForAcks(t *testing.T) {
	defer func(g time.Duration) { interruptGrace = g }(interruptGrace)
	interruptGrace = 10 * time.Millisecond
	whole, err := os.ReadFile("../testdata/h264.mkv")
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.mkv")
	if err := os.WriteFile(cut, whole[:len(whole)-3000], 0o644); err != nil { // in the last cluster's frames
		t.Fatal(err)
	}
	kvs, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/putMedia" {
				h.ServeHTTP(w, r)
				return
			}
			_, _ = io.Copy(io.Discard, r.Body) // never answers
		})
	})
	mustRun(t, kvs, nil, "create-stream", "--stream-name", "cam", "--data-retention-in-hours", "1")
	code, _, stderr := kvsRun(t.Context(), t, kvs, nil, "put-media", "--stream-name", "cam", "--source", cut)
	t.Logf("stderr: %s", stderr)
	if code != ExitError || !strings.Contains(stderr, cut) || !strings.Contains(stderr, "not acknowledged") {
		t.Errorf("exit code %d, stderr %q; want %d, the file's error and the fragments not acknowledged", code, stderr, ExitError)
	}
}

// A file with more tracks than a KVS stream takes (3) is refused before the server is asked
// anything, naming the file and how to keep fewer, rather than uploaded for every fragment to
// come back as ERROR 4012 (after --create made the stream).
func TestPutMediaTooManyTracks(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	src := filepath.Join(t.TempDir(), "four.mkv")
	in := filepath.Join("..", "testdata", "h264_aac.mkv")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-i", in, "-map", "0:v", "-map", "0:a", "-map", "0:a", "-map", "0:a",
		"-c", "copy", src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	var requests atomic.Int32
	kvs, _ := e2eServer(t, requestCounter(&requests))
	code, _, stderr := kvsRun(t.Context(), t, kvs, nil, "put-media", "--stream-name", "cam", "--create", "--source", src)
	if code != ExitUsage || !strings.Contains(stderr, "--source: "+src+": 4 tracks; a KVS stream takes at most 3") {
		t.Errorf("exit %d, stderr %q; want a usage error about the 4 tracks", code, stderr)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d request(s) reached the server", n)
	}
}
