package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	// The server's clock, moved on by readyFresh before each state's /readyz: a check's result
	// answers for that long.
	var skew atomic.Int64
	e := newMediaEnvStore(t, fs, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) } })
	base := e.ts.URL
	readyz := func(status int, want string) {
		t.Helper()
		skew.Add(int64(readyFresh))
		checkHealth(t, base, "/readyz", status, want)
	}
	checkHealth(t, base, "/healthz", 200, "ok")
	readyz(200, "ready")

	writable := testutil.ReadOnly(t, dir)
	readyz(503, "read-only file system")
	checkHealth(t, base, "/healthz", 200, "ok")
	writable()
	readyz(200, "ready")

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
	readyz(503, "no space left on device")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	readyz(200, "ready")
}

// readyCounter is a store whose Ready counts its calls and returns what fail holds.
type readyCounter struct {
	store.Store
	calls atomic.Int64
	fail  atomic.Pointer[string]
}

func (r *readyCounter) Ready(context.Context) error {
	r.calls.Add(1)
	if msg := r.fail.Load(); msg != nil {
		return errors.New(*msg)
	}
	return nil
}

// TestReadyzReusesCheck: /readyz is unsigned, and the FS store's check syncs a file. Requests at
// once share one check, and its result answers for readyFresh (the server's clock, held still
// here), so no client makes the store check faster than once per readyFresh; after that a new
// check runs and its failure shows.
func TestReadyzReusesCheck(t *testing.T) {
	t.Parallel()
	st := &readyCounter{Store: store.NewMem()}
	var skew atomic.Int64
	t0 := time.Now()
	e := newMediaEnvStore(t, st, func(c *Config) { c.Now = func() time.Time { return t0.Add(time.Duration(skew.Load())) } })
	var wg sync.WaitGroup
	codes := make([]int, 50)
	for i := range codes {
		wg.Go(func() {
			resp, err := http.Get(e.ts.URL + "/readyz")
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	for range 20 {
		checkHealth(t, e.ts.URL, "/readyz", 200, "ready")
	}
	for i, c := range codes {
		if c != 200 {
			t.Errorf("concurrent /readyz %d: %d", i, c)
		}
	}
	// Requests that come while the check runs wait for it; those after it take its result,
	// which the clock held still keeps fresh.
	if n := st.calls.Load(); n != 1 {
		t.Fatalf("70 /readyz made %d store checks, want 1", n)
	}
	const before = 1
	msg := "the index does not answer"
	st.fail.Store(&msg)
	checkHealth(t, e.ts.URL, "/readyz", 200, "ready") // the last check's result, not yet readyFresh old
	if n := st.calls.Load(); n != before {
		t.Errorf("a /readyz within readyFresh of the last check ran another (%d, was %d)", n, before)
	}
	skew.Add(int64(readyFresh))
	checkHealth(t, e.ts.URL, "/readyz", 503, msg)
	if n := st.calls.Load(); n != before+1 {
		t.Errorf("a /readyz readyFresh after the last check: %d checks, want %d", n, before+1)
	}
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
