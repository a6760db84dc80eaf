package cmd

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openkvs/kvs/server"
)

// kvsProcessRun runs the kvs command line args as a process whose environment is only
// HOME/XDG_CONFIG_HOME (a fresh directory), no AWS configuration files, no instance metadata, and
// env: settings that the AWS SDK reads from the process environment itself. It returns the exit
// code, stdout and stderr.
func kvsProcessRun(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), kvsBinary(t), args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + home, "XDG_CONFIG_HOME=" + home,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// A region the SDK cannot use, from any of the places a region comes from, is a usage error
// (exit 2) that names the region and where to set it, found before any request; not the SDK's
// "failed to bind endpoint params" with exit code 1.
func TestInvalidRegionIsUsageError(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	ep, _ := e2eServer(t, requestCounter(&requests))
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--region", "eu_west_1"}},
		{"KVS_REGION", []string{"KVS_REGION=eu_west_1"}, nil},
		{"AWS_REGION", []string{"AWS_REGION=eu_west_1"}, nil},
	}
	for _, tc := range cases {
		for _, command := range [][]string{{"list-streams"}, {"get-media", "--stream-name", "cam", "--no-follow"}} {
			t.Run(tc.name+"/"+command[0], func(t *testing.T) {
				args := append(append([]string{"--endpoint", ep}, tc.args...), command...)
				code, stdout, stderr := kvsProcessRun(t, tc.env, args...)
				if code != ExitUsage {
					t.Errorf("exit code %d, want %d", code, ExitUsage)
				}
				if stdout != "" {
					t.Errorf("stdout %q", stdout)
				}
				if !strings.HasPrefix(stderr, `kvs: --region "eu_west_1": `) || !strings.Contains(stderr, "KVS_REGION") ||
					!strings.Contains(stderr, "AWS_REGION") || strings.Contains(stderr, "bind endpoint") {
					t.Errorf("stderr:\n%s", stderr)
				}
			})
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d request(s) reached the server", n)
	}
}

// An AWS_PROFILE that the AWS configuration files do not have is a usage error that names the
// profile and says what to do, found before any request; not "client: aws config: failed to get
// shared config profile, nosuch" with exit code 1.
func TestMissingAWSProfileIsUsageError(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	ep, _ := e2eServer(t, requestCounter(&requests))
	for _, command := range [][]string{{"list-streams"}, {"put-media", "--stream-name", "cam", "--source", "../testdata/h264.mkv"}} {
		t.Run(command[0], func(t *testing.T) {
			code, stdout, stderr := kvsProcessRun(t, []string{"AWS_PROFILE=nosuch"}, append([]string{"--endpoint", ep}, command...)...)
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d", code, ExitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			want := "kvs: AWS profile \"nosuch\" (AWS_PROFILE) is not in the AWS configuration files\n" +
				"Set AWS_PROFILE to a profile of ~/.aws/config or ~/.aws/credentials (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), or unset it for the default one.\n"
			if stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
			}
		})
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d request(s) reached the server", n)
	}
}

// With no AWS credentials for an AWS endpoint, every command says so and what to do, at once:
// not the SDK's "get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS
// role found, ..." (which get-media printed after retrying it for 26 s). The request is never
// sent: signing fails first.
func TestNoCredentialsSaysWhatToDo(t *testing.T) {
	t.Parallel()
	const hint = "Configure AWS credentials as for the AWS CLI: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (AWS_PROFILE, ~/.aws/credentials; aws sso login for SSO). --log-level debug shows what the AWS SDK tried.\n"
	for _, tc := range []struct{ args, want string }{
		{"list-streams", "kvs: list-streams: cannot get AWS credentials to sign the request with\n"},
		{"get-media --stream-name cam --no-follow", "kvs: get-media cam: cannot get AWS credentials to sign the request with\n"},
		{"list-fragments --stream-name cam", "kvs: list-fragments cam: cannot get AWS credentials to sign the request with\n"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			args := append([]string{"--endpoint", "https://kinesisvideo.us-east-1.amazonaws.com"}, strings.Fields(tc.args)...)
			code, stdout, stderr := kvsProcessRun(t, nil, args...)
			if code != ExitError {
				t.Errorf("exit code %d, want %d", code, ExitError)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if stderr != tc.want+hint {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, tc.want+hint)
			}
		})
	}
}

// A kvs server with --auth sigv4 that refuses the key kvs signed with (none configured: kvs's
// placeholder key; or a wrong secret) gets a hint that says which credentials to set, for the
// control plane and the media APIs alike.
func TestRefusedCredentialsSayWhatToDo(t *testing.T) {
	t.Parallel()
	url := e2eSigV4Server(t, server.Credentials{"AKIDGOOD": "good-secret"})
	const hint = "Sign with a key the server accepts (kvs server --auth sigv4: one of its --credentials-file): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE. With none set, kvs signs requests to a local endpoint with a placeholder key.\n"
	wrongSecret := []string{"AWS_ACCESS_KEY_ID=AKIDGOOD", "AWS_SECRET_ACCESS_KEY=wrong"}
	for _, tc := range []struct {
		name string
		env  []string
		args string
	}{
		{"no credentials", nil, "list-streams"},
		{"wrong secret", wrongSecret, "list-streams"},
		{"wrong secret, get-media", wrongSecret, "get-media --stream-name cam --no-follow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := kvsProcessRun(t, tc.env, append([]string{"--endpoint", url}, strings.Fields(tc.args)...)...)
			if code != ExitError {
				t.Errorf("exit code %d, want %d", code, ExitError)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if !strings.Contains(stderr, "NotAuthorizedException") || !strings.HasSuffix(stderr, "\n"+hint) {
				t.Errorf("stderr:\n%s\nwant NotAuthorizedException and the hint:\n%s", stderr, hint)
			}
		})
	}
	// With the right key there is no complaint.
	code, _, stderr := kvsProcessRun(t, []string{"AWS_ACCESS_KEY_ID=AKIDGOOD", "AWS_SECRET_ACCESS_KEY=good-secret"}, "--endpoint", url, "list-streams")
	if code != ExitOK {
		t.Errorf("with the right key: exit code %d, stderr %s", code, stderr)
	}
}

// An endpoint with a path (a proxy's prefix, a pasted console URL) is a usage error, as every
// other malformed endpoint is, whichever of the flag and KVS_ENDPOINT gives it; the client
// refused it with exit code 1 and "client: endpoint ...". A trailing slash is fine.
func TestEndpointWithPathIsUsageError(t *testing.T) {
	t.Parallel()
	ep, _ := e2eServer(t, nil)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--endpoint", ep + "/kvs", "list-streams"}},
		{"KVS_ENDPOINT", []string{"KVS_ENDPOINT=" + ep + "/kvs"}, []string{"list-streams"}},
		{"one node of several", nil, []string{"--endpoint", ep + "," + ep + "/kvs", "list-streams"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := kvsProcessRun(t, tc.env, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d", code, ExitUsage)
			}
			if want := `kvs: --endpoint "` + ep + `/kvs": want http(s)://host[:port]` + "\n"; stdout != "" || !strings.HasPrefix(stderr, want) {
				t.Errorf("stdout %q, stderr:\n%s\nwant it to start with %s", stdout, stderr, want)
			}
		})
	}
	if code, _, stderr := kvsProcessRun(t, nil, "--endpoint", ep+"/", "list-streams"); code != ExitOK {
		t.Errorf("--endpoint %s/: exit code %d, stderr %s", ep, code, stderr)
	}
}
