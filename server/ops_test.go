package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"
)

// checkHealth requires GET path to answer status with a body containing want.
func checkHealth(t *testing.T, base, path string, status int, want string) {
	t.Helper()
	code, _, body := httpGet(t, base+path)
	if code != status || !strings.Contains(string(body), want) {
		t.Fatalf("GET %s: %d %q, want %d with %q", path, code, body, status, want)
	}
}

// TestReadyzReadOnlyDataDir: /readyz fails, saying why, while the data directory is read-only (a
// read-only bind mount over it: root here ignores file permissions) and while its filesystem (a
// small tmpfs) is full, and recovers with it; /healthz stays 200 throughout.
func TestReadyzReadOnlyDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testutil.Tmpfs(t, "4m"), "data")
	fs, err := store.OpenFS(dir, store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newMediaEnvStore(t, fs)
	base := e.ts.URL
	checkHealth(t, base, "/healthz", 200, "ok")
	checkHealth(t, base, "/readyz", 200, "ready")

	writable := testutil.ReadOnly(t, dir)
	checkHealth(t, base, "/readyz", 503, "read-only file system")
	checkHealth(t, base, "/healthz", 200, "ok")
	writable()
	checkHealth(t, base, "/readyz", 200, "ready")

	// Full: a file takes every free byte.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	for _, n := range []int{4096, 512, 1} { // the last pages
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	f.Close()
	checkHealth(t, base, "/readyz", 503, "no space left on device")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	checkHealth(t, base, "/readyz", 200, "ready")
}

// TestReadyzShuttingDown: once Close has begun, /readyz says so (load balancers drain the node)
// while /healthz still answers.
func TestReadyzShuttingDown(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	checkHealth(t, e.ts.URL, "/readyz", 200, "ready")
	e.srv.Close()
	checkHealth(t, e.ts.URL, "/readyz", 503, "shutting down")
	checkHealth(t, e.ts.URL, "/healthz", 200, "ok")
}

// TestOpsAuth: with credentials, /metrics and /events need a SigV4 signature (they name
// streams), the health checks do not; OpsHandler (kvs server --metrics-listen) serves /metrics
// and the health checks without one, and nothing else.
func TestOpsAuth(t *testing.T) {
	t.Parallel()
	e := authEnv(t)
	for _, path := range []string{"/metrics", "/events"} {
		code, _, body := httpGet(t, e.ts.URL+path)
		if code != 401 || !strings.Contains(string(body), "NotAuthorizedException") {
			t.Errorf("unsigned GET %s: %d %q, want 401 NotAuthorizedException", path, code, body)
		}
	}
	checkHealth(t, e.ts.URL, "/healthz", 200, "ok")
	checkHealth(t, e.ts.URL, "/readyz", 200, "ready")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.ts.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: "AKIDLOCAL", SecretAccessKey: "secret"}, req,
		emptyPayloadSHA256, "kinesisvideo", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "kvs_active_uploads") {
		t.Errorf("signed GET /metrics: %d %.200q", resp.StatusCode, b)
	}

	ops := httptest.NewServer(e.srv.OpsHandler())
	defer ops.Close()
	if fams := scrape(t, ops.URL+"/metrics"); fams["process_cpu_seconds_total"] == nil {
		t.Error("the ops listener's /metrics has no process_cpu_seconds_total")
	}
	checkHealth(t, ops.URL, "/readyz", 200, "ready")
	if code, _, _ := httpGet(t, ops.URL+"/"); code != 404 {
		t.Errorf("GET / on the ops listener: %d, want 404 (it serves nothing but /metrics and the health checks)", code)
	}
}
