package cmd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testcam"
	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server"
)

// writeAgentConfig writes an agent config file with the endpoint and the cameras (YAML lines of
// each camera's keys, without the leading "- ").
func writeAgentConfig(t *testing.T, endpoint string, cameras ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "endpoint: %s\ncameras:\n", endpoint)
	for _, c := range cameras {
		for i, line := range strings.Split(strings.TrimSpace(c), "\n") {
			prefix := "    "
			if i == 0 {
				prefix = "  - "
			}
			fmt.Fprintf(&b, "%s%s\n", prefix, strings.TrimSpace(line))
		}
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAgentConfigErrors(t *testing.T) {
	t.Parallel()
	good := "name: porch\nsource: rtsp://192.0.2.10/stream1\nstream-name: porch"
	for _, tc := range []struct {
		name    string
		cameras []string
		say     string
	}{
		{"no cameras", nil, "cameras: want a list"},
		{"no name", []string{"source: rtsp://192.0.2.10/s\nstream-name: x"}, `cameras[0]: name ""`},
		{"unknown key", []string{good + "\nspool-directory: /tmp/x"}, `camera porch: unknown key "spool-directory"`},
		{"bad value", []string{good + "\nfragment-duration: 2"}, "camera porch: fragment-duration: "},
		{"same name", []string{good, strings.Replace(good, "stream-name: porch", "stream-name: other", 1)}, "camera porch: the name is used twice"},
		{"same stream", []string{good, strings.Replace(good, "name: porch", "name: garage", 1)}, "camera garage: stream porch is also camera porch's"},
		{"same spool", []string{good + "\nspool-dir: /tmp/s", "name: garage\nsource: testsrc\nstream-name: garage\nspool-dir: /tmp/s/"}, "camera garage: spool-dir /tmp/s/ is also camera porch's"},
		{"a file", []string{"name: clip\nsource: ../testdata/h264.mkv\nstream-name: clip"}, "camera clip: source ../testdata/h264.mkv: the agent takes cameras"},
		{"output", []string{good + "\noutput: json"}, "camera porch: output: the agent logs"},
		{"no stream", []string{"name: porch\nsource: testsrc"}, "camera porch: stream-name or stream-arn is required"},
		{"spool too small", []string{good + "\nspool-dir: /tmp/s\nspool-max-bytes: 100kB"}, "camera porch: spool-max-bytes 97.7KiB: want at least 256KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := writeAgentConfig(t, "http://127.0.0.1:1", tc.cameras...)
			if tc.cameras == nil {
				if err := os.WriteFile(cfg, []byte("endpoint: http://127.0.0.1:1\ncameras: []\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			code, _, stderr := kvsRun(t.Context(), t, "http://127.0.0.1:1", nil, "agent", "--config", cfg)
			if code != ExitUsage || !strings.Contains(stderr, tc.say) {
				t.Errorf("exit %d, stderr %q; want 2 saying %q", code, stderr, tc.say)
			}
		})
	}
}

// --once opens each camera, checks its stream, and names the bad ones.
func TestAgentOnce(t *testing.T) {
	t.Parallel()
	cam := testcam.StartTest(t, testcam.Config{User: "admin", Password: "secret"}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}})
	url, _ := e2eServer(t, nil)
	spool := t.TempDir()
	porch := fmt.Sprintf("name: porch\nsource: %s\nstream-name: porch\nspool-dir: %s", cam.URL("cam"), filepath.Join(spool, "porch"))
	garage := fmt.Sprintf("name: garage\nsource: rtsp://admin:nope@%s/cam\nstream-name: garage", cam.Addr())
	// attic's camera answers, but its stream does not exist and it does not create it: the agent
	// would retry it for ever, so --once says so (it said ok).
	attic := fmt.Sprintf("name: attic\nsource: %s\nstream-name: atic", cam.URL("cam"))
	mustRun(t, url, nil, "create-stream", "--stream-name", "porch")
	code, out, stderr := kvsRun(t.Context(), t, url, nil, "agent", "--once", "--config", writeAgentConfig(t, url, porch, garage, attic))
	if code != ExitError || !strings.Contains(stderr, "agent --once: 2 of 3 cameras failed: garage, attic") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(out, "porch: ok: "+cam.URL("cam")[:len("rtsp://admin:")]+"***@") || !strings.Contains(out, "V_MPEG4/ISO/AVC 320x240, A_AAC 48000 Hz") ||
		!strings.Contains(out, "garage: FAILED: camera "+cam.Addr()+"/cam: 401 Unauthorized") ||
		!strings.Contains(out, "attic: FAILED: stream atic does not exist at "+url+": add `create: true` to this camera") {
		t.Errorf("stdout %q", out)
	}
	if code, out, stderr := kvsRun(t.Context(), t, url, nil, "agent", "--once", "--config", writeAgentConfig(t, url, porch)); code != ExitOK {
		t.Errorf("one good camera: exit %d\n%s%s", code, out, stderr)
	}
}

// TestAgent runs kvs agent (a process) with a working camera and one whose password is wrong:
// the first one's fragments are stored while the second one's errors, naming it, are retried;
// status lines come every --status-interval; SIGTERM stops it within seconds with a summary and
// exit status 0.
func TestAgent(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cam := testcam.StartTest(t, testcam.Config{User: "admin", Password: "secret"}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}, SenderReports: true})
	url, _ := e2eServer(t, nil)
	spool := t.TempDir()
	cfg := writeAgentConfig(t, url,
		fmt.Sprintf("name: porch\nsource: %s\nstream-name: porch\nfragment-duration: 1s\nspool-dir: %s\ncreate: true", cam.URL("cam"), filepath.Join(spool, "porch")),
		fmt.Sprintf("name: garage\nsource: rtsp://admin:nope@%s/cam\nstream-name: garage\nspool-dir: %s\ncreate: true", cam.Addr(), filepath.Join(spool, "garage")))
	agent := exec.Command(kvsBinary(t), "agent", "--config", cfg, "--status-interval", "1s")
	var stderr lockedBuffer
	agent.Stderr = &stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for len(producerTimesOrNone(t, url, "porch")) < 3 || strings.Count(stderr.String(), "msg=status camera=garage") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d fragments of porch; stderr:\n%s", len(producerTimesOrNone(t, url, "porch")), stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	log := stderr.String()
	for _, want := range []string{
		"msg=status camera=porch state=running",
		"camera_connected=true",
		`level=ERROR msg="camera stopped; starting it again" camera=garage error="put-media garage: camera ` + cam.Addr() + `/cam: 401 Unauthorized`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not have %q:\n%s", want, log)
		}
	}
	stop := time.Now()
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("agent exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the agent did not exit within 5 s of SIGTERM:\n%s", stderr.String())
	}
	t.Logf("agent stopped in %v", time.Since(stop).Round(time.Millisecond))
	log = stderr.String()
	for _, want := range []string{"msg=summary camera=porch state=stopped", "msg=summary camera=garage", `msg="agent stopped" cameras=2`} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not have %q:\n%s", want, log)
		}
	}
	times := producerTimes(t, url, "porch")
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d < 900*time.Millisecond || d > 1100*time.Millisecond {
			t.Errorf("fragments %d and %d are %v apart: want 1 s fragments in order, none missing", i-1, i, d)
		}
	}
}

// producerTimesOrNone is producerTimes, or nothing while the stream does not exist.
func producerTimesOrNone(t *testing.T, endpoint, stream string) []string {
	t.Helper()
	code, out, _ := kvsRun(t.Context(), t, endpoint, nil, "list-fragments", "--stream-name", stream, "--output", "numbers")
	if code != ExitOK {
		return nil
	}
	return strings.Fields(out)
}

// TestAgentConfigValues: a camera key without a value (`spool-dir:` with nothing after it, a
// YAML null) is an error naming the camera and the key, not the text "<nil>" (a spool directory
// called <nil> in the working directory, a stream called <nil>). The camera refuses at once, so
// that a file taken as good ends the run (--once). A key at the top of the file other than the
// global settings and cameras is an error too.
func TestAgentConfigValues(t *testing.T) {
	t.Parallel()
	good := "name: porch\nsource: rtsp://127.0.0.1:1/cam\nstream-name: porch"
	for _, tc := range []struct {
		name   string
		config string // after the endpoint line
		say    string
	}{
		{"null spool-dir", "cameras:\n  - " + strings.ReplaceAll(good, "\n", "\n    ") + "\n    spool-dir:\n", "camera porch: spool-dir: no value"},
		{"null stream", "cameras:\n  - name: porch\n    source: rtsp://127.0.0.1:1/cam\n    stream-name: ~\n", "camera porch: stream-name: no value"},
		// A misspelt endpoint would send every camera to the default one (127.0.0.1:4567), to be
		// spooled until the disk is full; a camera key at the top is no default for the cameras.
		{"top-level typo", "endpiont: https://kinesisvideo.eu-west-1.amazonaws.com\ncameras:\n  - " + strings.ReplaceAll(good, "\n", "\n    ") + "\n", `unknown key "endpiont"`},
		{"camera key at the top", "spool-max-bytes: 4GiB\ncameras:\n  - " + strings.ReplaceAll(good, "\n", "\n    ") + "\n", `unknown key "spool-max-bytes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat("<nil>"); err != nil {
				t.Cleanup(func() { _ = os.Remove("<nil>") }) // what --once makes when it takes the null for a directory
			}
			cfg := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(cfg, []byte("endpoint: http://127.0.0.1:1\n"+tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, stderr := kvsRun(t.Context(), t, "http://127.0.0.1:1", nil, "agent", "--once", "--config", cfg)
			if code != ExitUsage || !strings.Contains(stderr, tc.say) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 saying %q", code, out, stderr, tc.say)
			}
		})
	}
}

// --once with an endpoint that accepts connections and never answers (a frozen server, a
// half-open proxy) says the camera is ok, as for one that is down, and returns: the stream
// check waited for the answer for ever.
func TestAgentOnceEndpointSilent(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	url := "http://" + ln.Addr().String()
	porch := fmt.Sprintf("name: porch\nsource: %s\nstream-name: porch", cam.URL("cam"))
	// A minute is far more than the check may take: past it, the hang is the failure.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code, out, stderr := kvsRun(ctx, t, url, nil, "agent", "--once", "--config", writeAgentConfig(t, url, porch))
	if ctx.Err() != nil {
		t.Fatalf("agent --once still waited for the endpoint after a minute\nstdout %q", out)
	}
	if code != ExitOK || !strings.Contains(out, "porch: ok: ") {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, out, stderr)
	}
}

// --once against a kvs server with --auth sigv4 that refuses the key the agent signs with (here
// kvs's placeholder key: none is configured) says so with the credentials hint: the agent would
// retry it for ever, as a stream that does not exist (it said ok).
func TestAgentOnceRefusedKey(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}})
	url := e2eSigV4Server(t, server.Credentials{"AKIDGOOD": "good-secret"})
	porch := fmt.Sprintf("name: porch\nsource: %s\nstream-name: porch\ncreate: true", cam.URL("cam"))
	attic := fmt.Sprintf("name: attic\nsource: %s\nstream-name: attic", cam.URL("cam"))
	code, out, stderr := kvsRun(t.Context(), t, url, nil, "agent", "--once", "--config", writeAgentConfig(t, url, porch, attic))
	if code != ExitError || !strings.Contains(stderr, "agent --once: 2 of 2 cameras failed: porch, attic") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	for _, name := range []string{"porch", "attic"} {
		if !strings.Contains(out, name+": FAILED: ") || !strings.Contains(out, "refused the request: NotAuthorizedException") ||
			!strings.Contains(out, "invalid. Sign with a key the server accepts") {
			t.Errorf("stdout %q", out)
		}
	}
}
