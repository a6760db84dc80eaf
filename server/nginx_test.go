package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/cluster"
)

// nginxConf is the reverse-proxy set-up README's "Behind a reverse proxy" gives, less TLS:
// uploads stream to kvs (no 1 MB body cap, no request buffering), and response buffering is
// left at nginx's default (on), which kvs turns off per response with X-Accel-Buffering.
const nginxConf = `daemon off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s;
    location / {
      proxy_pass %[3]s;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      client_max_body_size 0;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
`

// startNginx runs nginx in front of upstream (a base URL) and returns its base URL once it
// answers /healthz from kvs.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	base, wait := launchNginx(t, upstream)
	wait()
	return base
}

// launchNginx runs nginx in front of upstream and returns its base URL at once, and wait, which
// returns once kvs answers /healthz through it (for an upstream that is not serving yet).
func launchNginx(t *testing.T, upstream string) (string, func()) {
	t.Helper()
	bin := testutil.NeedTool(t, "nginx", "/usr/sbin")
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, addr, upstream), 0o600); err != nil {
		t.Fatal(err)
	}
	// stderr to a file: nginx's workers inherit it, and a pipe would keep Wait waiting for them.
	logFile, err := os.Create(filepath.Join(dir, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-p", dir, "-c", conf)
	cmd.Stderr = logFile
	testutil.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
		<-exited
		if b, _ := os.ReadFile(logFile.Name()); len(b) > 0 {
			t.Logf("nginx: %s", b)
		}
	})
	base := "http://" + addr
	return base, func() { waitNginx(t, base, exited) }
}

func waitNginx(t *testing.T, base string, exited <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v", err)
		case <-ctx.Done():
			t.Fatalf("nginx at %s did not answer /healthz", base)
		case <-tick.C:
		}
	}
}

// via returns e with its requests going to base (a proxy in front of e's server) instead.
func (e *mediaEnv) via(t *testing.T, base string) *mediaEnv {
	ts := httptest.NewServer(http.NotFoundHandler()) // for its client; its URL is replaced
	t.Cleanup(ts.Close)
	ts.URL = base
	return &mediaEnv{srv: e.srv, ts: ts, store: e.store}
}

// Behind nginx with its default response buffering, a PutMedia producer got no ACK while its
// upload was open (nginx held the small ACK lines until its buffer filled or the response
// ended: the kvs CLI resent every fragment after 30 s of silence, duplicates included), and a
// live GetMedia reader got no fragment. Each ACK and each fragment must pass while the
// connection stays open.
func TestNginxPassesAcksAndLiveMedia(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	px := e.via(t, startNginx(t, e.ts.URL))
	c := loadClip(t, "h264.mkv")
	px.createStream(t, "cam", 1)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	pc := px.startPut(t, "cam")
	if pc.status != 200 {
		t.Fatalf("put media through nginx: %d %s", pc.status, pc.errTyp)
	}
	acks := make(chan ackEvent, 6)
	go func() {
		defer close(acks)
		for {
			ev, ok := pc.next()
			if !ok {
				return
			}
			acks <- ev
		}
	}()
	expectAcks := func() {
		t.Helper()
		for _, want := range []string{ackBuffering, ackReceived, ackPersisted} {
			select {
			case ev, ok := <-acks:
				if !ok || ev.EventType != want {
					t.Fatalf("ack %+v (response open: %v), want %s", ev, ok, want)
				}
			case <-ctx.Done():
				t.Fatalf("no %s ACK through nginx while the upload is open: the proxy buffers the response", want)
			}
		}
	}
	pc.write(c.header())
	pc.write(c.cluster(t, 0, baseMillis))
	expectAcks()

	body := px.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer body.Close()
	got := make(chan error, 1)
	go func() {
		rd := mkv.NewReader(body)
		for {
			ev, err := rd.Next()
			if err != nil {
				got <- fmt.Errorf("live GetMedia through nginx: %w", err)
				return
			}
			if ev.Kind == mkv.EventFrame {
				got <- nil
				return
			}
		}
	}()
	pc.write(c.cluster(t, 1, baseMillis))
	expectAcks()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no frame of the new fragment reached the live GetMedia reader through nginx: the proxy buffers the response")
	}
	pc.end()
}

// TestNginxClusterLiveTail: each node of a cluster behind its own nginx, advertised there
// (README's "Behind a reverse proxy", docs/cluster.md: the nodes reach each other at their
// advertised URLs). A live GetMedia reader on node 2 is fed through the writer's internal tail,
// which passes node 1's nginx: each fragment must reach the reader while the upload is open,
// not wait in nginx's buffers for the next one.
func TestNginxClusterLiveTail(t *testing.T) {
	t.Parallel()
	var waits []func()
	nodes := newCluster(t, 2, func(c *cluster.Config) {
		base, wait := launchNginx(t, c.NodeURL)
		c.NodeURL = base
		waits = append(waits, wait)
	}, nil)
	for _, w := range waits {
		w()
	}
	n1, n2 := nodes[0], nodes[1]
	c := loadClip(t, "h264.mkv")
	n1.createStream(t, "cam", 1)
	pc := n1.startPut(t, "cam")
	pc.write(c.header())
	first := pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	body := n2.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer body.Close()
	got := liveNumbers(t, body, 1)
	pc.fragment(c.cluster(t, 1, baseMillis), c.fragTimecode(1, baseMillis), true)
	select {
	case g := <-got:
		if len(g) != 1 || g[0] != first+1 {
			t.Errorf("live reader on node 2 got %v, want [%d]", g, first+1)
		}
	case <-ctx.Done():
		t.Fatal("the new fragment did not reach the live reader on node 2 while the upload is open: node 1's nginx buffers its internal tail")
	}
	pc.end()
}
