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
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
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
