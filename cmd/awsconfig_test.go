package cmd

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// With no --endpoint, KVS_ENDPOINT or config-file endpoint, kvs goes where the AWS CLI goes: the
// endpoint AWS_ENDPOINT_URL_KINESIS_VIDEO, AWS_ENDPOINT_URL or the profile's endpoint_url names
// (the SDK's order), unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is set; kvs's own settings beat
// them. (t.Setenv: not parallel.)
func TestEndpointFromAWSConfiguration(t *testing.T) {
	url, _ := kvsServer(t)
	other := "http://127.0.0.1:1" // nothing listens there
	mustRun(t, url, nil, "create-stream", "--stream-name", "cam-1")
	dir := t.TempDir()
	profile := func(body string) string {
		p := filepath.Join(dir, strings.NewReplacer(" ", "", "\n", "", "=", "", "[", "", "]", "", ":", "", "/", "", ".", "").Replace(body))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // the endpoint the command used
	}{
		{"service variable", map[string]string{"AWS_ENDPOINT_URL_KINESIS_VIDEO": url}, nil, url},
		{"global variable", map[string]string{"AWS_ENDPOINT_URL": url}, nil, url},
		{"service beats global", map[string]string{"AWS_ENDPOINT_URL_KINESIS_VIDEO": url, "AWS_ENDPOINT_URL": other}, nil, url},
		{"profile endpoint_url", map[string]string{"AWS_CONFIG_FILE": profile("[default]\nendpoint_url = " + url + "\n")}, nil, url},
		{"profile services section", map[string]string{"AWS_CONFIG_FILE": profile("[default]\nendpoint_url = " + other +
			"\nservices = kvs\n[services kvs]\nkinesis_video =\n  endpoint_url = " + url + "\n")}, nil, url},
		{"KVS_ENDPOINT beats them", map[string]string{"KVS_ENDPOINT": url, "AWS_ENDPOINT_URL_KINESIS_VIDEO": other}, nil, url},
		{"--endpoint beats them", map[string]string{"AWS_ENDPOINT_URL_KINESIS_VIDEO": other}, []string{"--endpoint", url}, url},
		{"nothing there", map[string]string{"AWS_ENDPOINT_URL": other}, nil, other},
		{"ignored", map[string]string{"AWS_ENDPOINT_URL_KINESIS_VIDEO": other, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, nil, "http://127.0.0.1:4567"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			env := &Env{Stdout: &out, Stderr: &errb, Log: slog.New(slog.NewTextHandler(&errb, nil)),
				Getenv: func(k string) string { return tc.env[k] }}
			code := Run(t.Context(), env, append([]string{"list-streams", "--output", "table", "--config", os.DevNull}, tc.args...))
			if got := env.Config.GetString("endpoint"); got != tc.want {
				t.Errorf("endpoint = %q, want %q", got, tc.want)
			}
			if tc.want == url && (code != ExitOK || !strings.Contains(out.String(), "cam-1")) {
				t.Errorf("list-streams: exit %d, %q %q", code, out.String(), errb.String())
			}
			if tc.want == other && (code != ExitError || !strings.Contains(errb.String(), "came from the AWS configuration")) {
				t.Errorf("list-streams at nothing: exit %d, stderr %q, want a hint naming the AWS configuration", code, errb.String())
			}
		})
	}
}

// The AWS CLI and kvs, both pointed at a server by AWS_ENDPOINT_URL_KINESIS_VIDEO alone, print the
// same list-streams. The AWS CLI reads the variable from version 2.13 (1.29 for v1) on: an older
// one goes to AWS, and the test is skipped. (t.Setenv: not parallel.)
func TestAWSCLIAndKVSShareEndpointVariable(t *testing.T) {
	url, _ := kvsServer(t)
	for _, name := range []string{"cam-1", "cam-2"} {
		mustRun(t, url, nil, "create-stream", "--stream-name", name, "--data-retention-in-hours", "2")
	}
	cli := testutil.NewAWSCLI(t, "")
	cli.Env = append(cli.Env, "AWS_ENDPOINT_URL_KINESIS_VIDEO="+url)
	awsOut, stderr, code := cli.Run("kinesisvideo", "list-streams", "--output", "text")
	if code != 0 && strings.Contains(stderr, "amazonaws.com") {
		version, _, _ := cli.Run("--version")
		t.Skipf("this AWS CLI (%s) does not read AWS_ENDPOINT_URL_KINESIS_VIDEO: %s", bytes.TrimSpace(version), strings.TrimSpace(stderr))
	}
	if code != 0 {
		t.Fatalf("aws kinesisvideo list-streams: exit %d: %s", code, stderr)
	}
	t.Setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", url)
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Log: slog.New(slog.NewTextHandler(&errb, nil)), Getenv: func(string) string { return "" }}
	if code := Run(t.Context(), env, []string{"list-streams", "--output", "text"}); code != ExitOK {
		t.Fatalf("kvs list-streams: exit %d: %s", code, errb.String())
	}
	if strings.Count(out.String(), "\n") != 2 || out.String() != string(awsOut) {
		t.Errorf("kvs list-streams:\n%q\naws list-streams:\n%q", out.String(), awsOut)
	}
}

// An endpoint from the config file that nothing answers at says where it came from, as one from
// the AWS configuration does: before, the hint was only "point --endpoint (KVS_ENDPOINT) at a
// running server", and a user who never typed the address did not learn which file held it.
func TestEndpointFromConfigFileNamedWhenAway(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "kvs.yaml")
	if err := os.WriteFile(cfg, []byte("endpoint: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := Run(t.Context(), env, []string{"list-streams", "--config", cfg})
	if code != ExitError || !strings.Contains(errb.String(), "nothing is listening at http://127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(errb.String(), "came from the config file "+cfg) {
		t.Errorf("stderr does not name the config file %s:\n%s", cfg, errb.String())
	}
}
