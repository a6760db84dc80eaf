package cmd

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/server"
)

// TestServeOps runs kvs server with the operator's flags: --auth sigv4 keeps /metrics signed on
// the main listener while --metrics-listen serves it unsigned, with the disk quota of
// --max-disk-usage in it; /readyz answers on both; --webhook with --webhook-secret gets a signed
// stream.created when a stream is created.
func TestServeOps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credFile, []byte("AKIAKVSLOCALDUMMYKEY kvs-local-dummy-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hooks := make(chan server.Event, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !hmac.Equal([]byte(r.Header.Get("X-Kvs-Signature")), []byte(server.SignWebhook([]byte("hook-secret"), body))) {
			t.Errorf("webhook signature %q does not match its body %s", r.Header.Get("X-Kvs-Signature"), body)
		}
		var ev server.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Error(err)
		}
		hooks <- ev
	}))
	defer receiver.Close()
	endpoint, logs, stop := startServe(t, "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--max-disk-usage", "20MB", "--written-cache", "64MiB", "--metrics-listen", "127.0.0.1:0", "--auth", "sigv4", "--credentials-file", credFile,
		"--webhook", receiver.URL, "--webhook-secret", "hook-secret")
	m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no metrics listener in the log:\n%s", logs)
	}
	opsURL := "http://" + m[1]
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url) //nolint:noctx // test
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(endpoint + "/metrics"); code != 401 {
		t.Errorf("unsigned /metrics on the main listener: %d %.100s, want 401", code, body)
	}
	code, body := get(opsURL + "/metrics")
	if code != 200 || !strings.Contains(body, "kvs_store_disk_limit_bytes 2e+07") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("/metrics on --metrics-listen: %d, want 200 with kvs_store_disk_limit_bytes 2e+07:\n%.2000s", code, body)
	}
	for _, url := range []string{endpoint, opsURL} {
		if code, body := get(url + "/readyz"); code != 200 || body != "ready\n" {
			t.Errorf("%s/readyz: %d %q", url, code, body)
		}
	}
	env, _ := runEnv(t, endpoint)
	if err := runCreateStream(t.Context(), env, createStreamOptions{StreamName: "hooked", RetentionHours: 1, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-hooks:
		if ev.Type != server.EventStreamCreated || ev.Stream != "hooked" {
			t.Errorf("webhook got %+v, want stream.created of hooked", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook call within 10 s of CreateStream")
	}
	if code := stop(); code != ExitOK {
		t.Errorf("exit %d; logs:\n%s", code, logs)
	}
}

// --written-cache takes a size above 0 or "all", for a data directory only.
func TestWrittenCacheFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value             string
		clustered, memory bool
		want              int64
		error             string
	}{
		{value: "all", want: -1},
		{value: "256MiB", want: 256 << 20},
		{value: "2GB", want: 2e9},
		{value: "0", error: "want a size above 0"},
		{value: "lots", error: "want a size above 0"},
		{value: "1GiB", memory: true, error: "--memory and cluster nodes have none"},
		{value: "1GiB", clustered: true, error: "--memory and cluster nodes have none"},
	} {
		err := opsOptions{WrittenCache: tc.value}.validate(tc.clustered, tc.memory)
		if tc.error != "" {
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("--written-cache %s (clustered %v, memory %v): %v, want an error saying %q", tc.value, tc.clustered, tc.memory, err, tc.error)
			}
			continue
		}
		if n, perr := parseWrittenCache(tc.value); err != nil || perr != nil || n != tc.want {
			t.Errorf("--written-cache %s: %v, %d, %v; want %d", tc.value, err, n, perr, tc.want)
		}
	}
}

// TestStartingHandler: while the store opens, /healthz says the process is up and everything else,
// /readyz and the API alike, is 503 with a reason and a Retry-After.
func TestStartingHandler(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(starting))
	defer ts.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{http.MethodGet, "/healthz", 200, "ok"},
		{http.MethodGet, "/readyz", 503, "the store is opening"},
		{http.MethodPost, "/createStream", 503, "the store is opening"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, ts.URL+tc.path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) || (tc.code == 503 && resp.Header.Get("Retry-After") == "") {
			t.Errorf("%s %s: %d %q (Retry-After %q), want %d with %q", tc.method, tc.path, resp.StatusCode, b, resp.Header.Get("Retry-After"), tc.code, tc.body)
		}
	}
}

// TestServeOpsListenerWhileStoreOpens: --metrics-listen answers /healthz (200) and /readyz (503)
// while the store is still opening, as the main listener does, so that a liveness probe pointed
// at the ops port does not fail, and have the process restarted, during a long recovery. Here the
// store is a cluster whose PostgreSQL accepts connections and never answers.
func TestServeOpsListenerWhileStoreOpens(t *testing.T) {
	t.Parallel()
	pg, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	go func() {
		for {
			c, err := pg.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &lockedBuffer{}
	env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: logs, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"server", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--index", "postgres://kvs@" + pg.Addr().String() + "/kvs?sslmode=disable&connect_timeout=60",
			"--objects", "s3://bucket?endpoint=http://127.0.0.1:1&path_style=true", "--advertise-url", "http://127.0.0.1:1"})
	}()
	re := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
	var m []string
	for m == nil {
		select {
		case code := <-done:
			t.Fatalf("kvs server exited (%d) before serving --metrics-listen, whose store never opened; logs:\n%s", code, logs)
		case <-time.After(20 * time.Millisecond):
		}
		m = re.FindStringSubmatch(logs.String())
	}
	if strings.Contains(logs.String(), "kvs server listening") {
		t.Fatalf("the store opened against a PostgreSQL that never answers; logs:\n%s", logs)
	}
	for _, tc := range []struct {
		path string
		code int
		body string
	}{{"/healthz", 200, "ok"}, {"/readyz", 503, "the store is opening"}} {
		resp, err := http.Get("http://" + m[1] + tc.path) //nolint:noctx // test
		if err != nil {
			t.Fatalf("--metrics-listen %s while the store opens: %v", tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("--metrics-listen %s while the store opens: %d %q, want %d with %q", tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
	}
	cancel()
	<-done
}
