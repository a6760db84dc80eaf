package cmd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// lockedBuffer is a bytes.Buffer safe for the server's logger and the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startServe runs `kvs server args...` in a goroutine and returns its endpoint URL (the first
// stdout line) and a stop function that cancels it and returns the exit code.
func startServe(t *testing.T, args ...string) (endpoint string, logs *lockedBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	logs = &lockedBuffer{}
	env := &Env{Stdin: strings.NewReader(""), Stdout: pw, Stderr: logs, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		code := Run(ctx, env, append([]string{"server"}, args...))
		pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("server printed no address (exit %d): %v; logs:\n%s", <-done, err, logs)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() { stop() })
	return strings.TrimSpace(line), logs, stop
}

func TestServeRestartKeepsStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	endpoint, logs, stop := startServe(t, "--listen", "127.0.0.1:0", "--data-dir", dir)
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") || strings.HasSuffix(endpoint, ":0") {
		t.Fatalf("endpoint %q", endpoint)
	}
	if l := logs.String(); !strings.Contains(l, "kvs server listening") || !strings.Contains(l, "data="+dir) ||
		!strings.Contains(l, "advertise_url="+endpoint) {
		t.Errorf("start log:\n%s", l)
	}
	env, _ := runEnv(t, endpoint)
	if err := runCreateStream(t.Context(), env, createStreamOptions{StreamName: "persisted", RetentionHours: 1, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	var de bytes.Buffer
	env.Stdout = &de
	if err := runDescribeStream(t.Context(), env, streamOutputOptions{Stream: streamRef{Name: "persisted"}, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	if code := stop(); code != ExitOK {
		t.Fatalf("graceful shutdown: exit %d; logs:\n%s", code, logs)
	}
	if !strings.Contains(logs.String(), "kvs server stopped") {
		t.Errorf("no stop log:\n%s", logs)
	}

	endpoint2, _, stop2 := startServe(t, "--listen", "127.0.0.1:0", "--data-dir", dir)
	env2, out2 := runEnv(t, endpoint2)
	if err := runDescribeStream(t.Context(), env2, streamOutputOptions{Stream: streamRef{Name: "persisted"}, Output: outputJSON}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	// Same stream, same ARN, Version and creation time.
	if out2.String() != de.String() {
		t.Errorf("after restart:\n%s\nbefore:\n%s", out2, de.String())
	}
	if code := stop2(); code != ExitOK {
		t.Errorf("second shutdown: exit %d", code)
	}
}

func TestServeMemoryAndDataEndpoint(t *testing.T) {
	t.Parallel()
	endpoint, _, stop := startServe(t, "--listen", "127.0.0.1:0", "--memory", "--advertise-url", "http://media.example:9000")
	env, _ := runEnv(t, endpoint)
	if err := runCreateStream(t.Context(), env, createStreamOptions{StreamName: "m", Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	cl, err := newClient(t.Context(), env)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := cl.DataEndpoint(t.Context(), "m", "PUT_MEDIA")
	if err != nil || ep != "http://media.example:9000" {
		t.Errorf("DataEndpoint = %q, %v", ep, err)
	}
	if code := stop(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
}

func TestServeListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env, _, errb := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"server", "--memory", "--listen", ln.Addr().String()}); code != ExitError {
		t.Errorf("exit %d, want %d; stderr %q", code, ExitError, errb)
	}
	if code := Run(t.Context(), env, []string{"server", "--listen", "nope"}); code != ExitUsage {
		t.Errorf("bad --listen: exit %d", code)
	}
}

func TestDefaultDataDirAndAdvertise(t *testing.T) {
	t.Parallel()
	env := &Env{Getenv: func(k string) string { return map[string]string{"XDG_DATA_HOME": "/x", "HOME": "/h"}[k] }}
	if d, _ := defaultDataDir(env); d != "/x/kvs" {
		t.Errorf("with XDG_DATA_HOME: %q", d)
	}
	env.Getenv = func(k string) string { return map[string]string{"HOME": "/h"}[k] }
	if d, _ := defaultDataDir(env); d != "/h/.local/share/kvs" {
		t.Errorf("with HOME: %q", d)
	}
	// Windows: no HOME as a rule (kvs server without --data-dir failed there).
	env.Getenv = func(k string) string { return map[string]string{"LOCALAPPDATA": "/l"}[k] }
	if d, _ := defaultDataDir(env); d != "/l/kvs" {
		t.Errorf("with LOCALAPPDATA only: %q", d)
	}
	env.Getenv = func(string) string { return "" }
	if _, err := defaultDataDir(env); err == nil {
		t.Error("no HOME: no error")
	}
	for addr, want := range map[string]string{
		"0.0.0.0:4567": "http://127.0.0.1:4567", "[::]:4567": "http://127.0.0.1:4567",
		"10.1.2.3:80": "http://10.1.2.3:80", "[::1]:4567": "http://[::1]:4567",
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertiseURL("http", a); got != want {
			t.Errorf("advertiseURL(%s) = %s, want %s", addr, got, want)
		}
	}
}

// Listening on every interface without --advertise-url, GetDataEndpoint names the address each
// client reached the server at: a camera on the LAN that reached it as cameras.lan must not be
// sent to its own loopback, and a client on this machine still gets 127.0.0.1.
func TestServeWildcardListenDataEndpoint(t *testing.T) {
	t.Parallel()
	endpoint, _, stop := startServe(t, "--listen", "0.0.0.0:0", "--memory")
	_, port, err := net.SplitHostPort(strings.TrimPrefix(endpoint, "http://"))
	if err != nil {
		t.Fatalf("endpoint %q: %v", endpoint, err)
	}
	local := "http://127.0.0.1:" + port
	post := func(host, path, body string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "POST", local+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	post("127.0.0.1:"+port, "/createStream", `{"StreamName":"cam"}`)
	for host, want := range map[string]string{
		"cameras.lan:" + port: `{"DataEndpoint":"http://cameras.lan:` + port + `"}`,
		"127.0.0.1:" + port:   `{"DataEndpoint":"http://127.0.0.1:` + port + `"}`,
	} {
		if got := post(host, "/getDataEndpoint", `{"StreamName":"cam","APIName":"PUT_MEDIA"}`); got != want {
			t.Errorf("Host %s: %s, want %s", host, got, want)
		}
	}
	if code := stop(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
}

// A password given as a parameter of --index (postgres://kvs@db/kvs?password=..., which libpq
// and pgx take) is not printed in kvs server's messages.
func TestServeIndexPasswordParameterHidden(t *testing.T) {
	t.Parallel()
	code, out, errs := kvsRun(t.Context(), t, "", nil, "server", "--index", "mysql://kvs@db/kvs?password=hunter2",
		"--objects", "s3://bucket?endpoint=http://127.0.0.1:1")
	if code != ExitUsage || !strings.Contains(errs, "--index") {
		t.Fatalf("exit %d, want %d with an --index error:\n%s", code, ExitUsage, errs)
	}
	if strings.Contains(out+errs, "hunter2") {
		t.Errorf("the password is printed:\n%s%s", out, errs)
	}
}

// A second `kvs server` on a --data-dir another one serves refuses to start (bbolt's file lock)
// and says why: the directory is in use, naming it, not bbolt's bare "timeout".
func TestServeDataDirInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	startServe(t, "--listen", "127.0.0.1:0", "--data-dir", dir)
	code, out, errs := kvsRun(t.Context(), t, "", nil, "server", "--listen", "127.0.0.1:0", "--data-dir", dir)
	if code != ExitError {
		t.Fatalf("second server: exit %d, want %d; stdout %q stderr:\n%s", code, ExitError, out, errs)
	}
	if !strings.Contains(errs, dir) || !strings.Contains(errs, "in use") {
		t.Errorf("second server's error does not say the data directory %s is in use:\n%s", dir, errs)
	}
}

// Listening on every interface, the URL printed on stdout (what --endpoint is set to) names
// 127.0.0.1, as the default advertised URL does: not the wildcard, "http://[::]:PORT" for
// --listen 0.0.0.0:PORT, which is not the address asked for, cannot be connected to on Windows,
// and matches no TLS certificate.
func TestServeWildcardListenPrintsLoopbackURL(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		endpoint, _, stop := startServe(t, "--listen", listen, "--memory")
		host, port, err := net.SplitHostPort(strings.TrimPrefix(endpoint, "http://"))
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Errorf("--listen %s: printed %q, want http://127.0.0.1:PORT", listen, endpoint)
		}
		if code := stop(); code != ExitOK {
			t.Errorf("--listen %s: exit %d", listen, code)
		}
	}
}

// A request's headers stay in memory for as long as it runs (a GetMedia follower, a PutMedia
// upload: hours), so kvs server caps them at server.MaxHeaderBytes (64 KiB, far beyond what a KVS
// client or a browser sends) and answers more with 431. With net/http's default of 1 MiB, 64
// GetMedia followers that each sent 1 MB of headers held about 75 MB of the server's memory for
// as long as they followed. Measured on a kvs server process, its VmRSS, against a bound of 256
// KiB a connection.
func TestServeRequestHeadersBounded(t *testing.T) {
	t.Parallel()
	p := startKVS(t, "--data-dir", t.TempDir())
	resp, err := http.Post(p.Endpoint+"/createStream", "application/json", strings.NewReader(`{"StreamName":"hdr","DataRetentionInHours":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("createStream: %d", resp.StatusCode)
	}
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Skipf("no /proc: %v", err)
		}
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb << 10
			}
		}
		t.Fatal("no VmRSS")
		return 0
	}
	const conns = 64
	var pad strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&pad, "X-Pad-%d: %s\r\n", i, strings.Repeat("a", 1000))
	}
	body := `{"StreamName":"hdr","StartSelector":{"StartSelectorType":"NOW"}}`
	req := fmt.Sprintf("POST /getMedia HTTP/1.1\r\nHost: kvs\r\n%sContent-Length: %d\r\n\r\n%s", pad.String(), len(body), body)
	before := rss()
	statuses := map[int]int{}
	for range conns {
		c, err := net.Dial("tcp", strings.TrimPrefix(p.Endpoint, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		statuses[resp.StatusCode]++
	}
	if grown := rss() - before; grown > conns*256<<10 {
		t.Fatalf("%d connections with 1 MB of headers each (answered %v) grew the server by %d MB, want at most %d MB",
			conns, statuses, grown>>20, conns*256>>10)
	}
	if statuses[http.StatusRequestHeaderFieldsTooLarge] != conns {
		t.Errorf("answers %v, want 431 for each", statuses)
	}
}

// The AWS CLI's get-media cannot say "stop at the live edge": against kvs server it followed the
// stream until botocore's 60 s read timeout, then failed (exit 255) with the outfile cut short.
// --get-media-idle-timeout ends a response that has waited that long for a new fragment, so the
// README's `aws kinesis-video-media get-media ... out.mkv` ends by itself.
func TestServeGetMediaIdleTimeoutAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	endpoint, _, _ := startServe(t, "--listen", "127.0.0.1:0", "--memory", "--get-media-idle-timeout", "300ms")
	cli := testutil.NewAWSCLI(t, endpoint)
	var created struct{ StreamARN string }
	cli.OK(&created, "kinesisvideo", "create-stream", "--stream-name", "cam2", "--data-retention-in-hours", "1")
	out := filepath.Join(t.TempDir(), "out.mkv")
	if _, stderr, code := cli.Run("kinesis-video-media", "get-media", "--stream-name", "cam2",
		"--start-selector", "StartSelectorType=EARLIEST", out); code != 0 {
		t.Fatalf("aws get-media: exit %d: %s", code, stderr)
	}
}
