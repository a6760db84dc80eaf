package cmd

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A camera password with a character that is not valid in a URL (here "%zz") must not be printed:
// not by put-media, not by agent --once.
func TestRTSPPasswordNotPrinted(t *testing.T) {
	t.Parallel()
	const src = "rtsp://admin:pa%zzword@127.0.0.1:1/x"
	code, out, stderr := kvsRun(t.Context(), t, "http://127.0.0.1:1", nil, "put-media", "--stream-name", "porch", "--source", src)
	if code == ExitOK || strings.Contains(out+stderr, "pa%zzword") {
		t.Errorf("put-media: exit %d; the camera's password is printed:\nstdout %q\nstderr %q", code, out, stderr)
	}
	cfg := writeAgentConfig(t, "http://127.0.0.1:1", "name: porch\nsource: "+src+"\nstream-name: porch")
	code, out, stderr = kvsRun(t.Context(), t, "http://127.0.0.1:1", nil, "agent", "--once", "--config", cfg)
	if code == ExitOK || strings.Contains(out+stderr, "pa%zzword") {
		t.Errorf("agent --once: exit %d; the camera's password is printed:\nstdout %q\nstderr %q", code, out, stderr)
	}
}

// docs/agent.md: "Unknown keys, bad values and these mistakes are errors at start (exit status 2)
// naming the camera and the key." A source URL that cannot parse is a bad value: the agent must
// refuse it at start, not retry it forever.
func TestAgentRefusesMalformedSourceAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	url, _ := e2eServer(t, nil)
	cfg := writeAgentConfig(t, url, "name: porch\nsource: rtsp://admin:p#ss@127.0.0.1:1/x\nstream-name: porch\ncreate: true")
	code, _, stderr := kvsRun(ctx, t, url, nil, "agent", "--config", cfg)
	if code != ExitUsage || !strings.Contains(stderr, "camera porch") {
		t.Errorf("exit %d, want %d naming camera porch; stderr:\n%s", code, ExitUsage, stderr)
	}
}

// kvs server --help: --region "(default: AWS_REGION or the AWS profile's region, else us-east-1)"
// applies "by kvs server, in ARNs".
func TestServeRegionFromAWSRegion(t *testing.T) {
	t.Setenv("AWS_REGION", "eu-west-1")
	endpoint, _, _ := startServe(t, "--listen", "127.0.0.1:0", "--memory")
	out := mustRun(t, endpoint, nil, "create-stream", "--stream-name", "r")
	if !strings.Contains(out, "arn:aws:kinesisvideo:eu-west-1:") {
		t.Errorf("with AWS_REGION=eu-west-1, create-stream answered %s", out)
	}
}

// A --region the server cannot use is a usage error found before anything is opened, like the
// other flags: exit 2, one "server:" prefix.
func TestServeBadRegionIsUsageError(t *testing.T) {
	t.Parallel()
	env, _, errb := testEnv(t, map[string]string{"HOME": t.TempDir()})
	code := Run(t.Context(), env, []string{"--region", "EU", "server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()})
	if code != ExitUsage || strings.Contains(errb.String(), "server: server:") || strings.Contains(errb.String(), "store recovery") {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitUsage, errb.String())
	}
}
