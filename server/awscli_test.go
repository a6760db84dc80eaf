package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// awsCLI runs the real AWS CLI v2 against e with dummy credentials and no config.
type awsCLI struct {
	t        *testing.T
	bin, url string
	home     string
	service  string // the CLI's service command; "" is kinesisvideo
}

func newAWSCLI(t *testing.T, e *controlEnv) *awsCLI {
	return &awsCLI{t: t, bin: testutil.NeedTool(t, "/usr/bin/aws"), url: e.ts.URL, home: t.TempDir()}
}

// run returns stdout, stderr and the exit code of `aws kinesisvideo args...` (or c.service).
func (c *awsCLI) run(args ...string) (stdout []byte, stderr string, code int) {
	c.t.Helper()
	service := c.service
	if service == "" {
		service = "kinesisvideo"
	}
	full := append([]string{"--endpoint-url", c.url, "--region", "us-east-1", "--output", "json", service}, args...)
	cmd := exec.CommandContext(c.t.Context(), c.bin, full...)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + c.home, "AWS_ACCESS_KEY_ID=AKIDLOCAL", "AWS_SECRET_ACCESS_KEY=secret",
		"AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_MAX_ATTEMPTS=1",
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		c.t.Fatalf("aws %v: %v", args, err)
	}
	return out.Bytes(), errb.String(), code
}

// ok runs the CLI, requires success and decodes its JSON output into v (if not nil).
func (c *awsCLI) ok(v any, args ...string) {
	c.t.Helper()
	out, stderr, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("aws kinesisvideo %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			c.t.Fatalf("aws kinesisvideo %s: output %q: %v", strings.Join(args, " "), out, err)
		}
	}
}

// fails runs the CLI and requires exit code 254 (a service error) with the error name on stderr.
func (c *awsCLI) fails(errorName string, args ...string) {
	c.t.Helper()
	_, stderr, code := c.run(args...)
	if code != 254 || !strings.Contains(stderr, errorName) {
		c.t.Errorf("aws kinesisvideo %s: exit %d, stderr %q; want 254 and %s", strings.Join(args, " "), code, stderr, errorName)
	}
}

// TestAWSCLI drives the server with the real AWS CLI v2. Each CLI start costs about 2 s of
// Python here, so the calls are few and the error cases run concurrently.
func TestAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: starts the AWS CLI about 15 times")
	}
	e := newControlEnv(t)
	cli := newAWSCLI(t, e)

	var created struct{ StreamARN string }
	cli.ok(&created, "create-stream", "--stream-name", "cli-stream", "--media-type", "video/h264",
		"--data-retention-in-hours", "24", "--tags", "team=video,env=dev")
	if !strings.HasPrefix(created.StreamARN, "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cli-stream/") {
		t.Fatalf("StreamARN = %q", created.StreamARN)
	}
	var desc struct {
		StreamInfo struct {
			StreamName, StreamARN, MediaType, KmsKeyId, Version, Status string
			DataRetentionInHours                                        int
			CreationTime                                                any
		}
	}
	cli.ok(&desc, "describe-stream", "--stream-name", "cli-stream")
	si := desc.StreamInfo
	if si.StreamName != "cli-stream" || si.StreamARN != created.StreamARN || si.MediaType != "video/h264" ||
		si.Status != "ACTIVE" || si.DataRetentionInHours != 24 || len(si.Version) != 20 || si.CreationTime == nil {
		t.Errorf("describe-stream: %+v", si)
	}

	t.Run("errors", func(t *testing.T) {
		cli := &awsCLI{t: t, bin: cli.bin, url: cli.url, home: cli.home}
		for _, tc := range []struct {
			name, want string
			args       []string
		}{
			{"in use", "ResourceInUseException", []string{"create-stream", "--stream-name", "cli-stream"}},
			{"invalid name", "InvalidArgumentException", []string{"create-stream", "--stream-name", "bad/name"}},
			{"not found", "ResourceNotFoundException", []string{"describe-stream", "--stream-name", "missing"}},
			{"delete not found", "ResourceNotFoundException", []string{"delete-stream", "--stream-arn", "arn:aws:kinesisvideo:us-east-1:000000000000:stream/missing/1"}},
			{"delete version mismatch", "VersionMismatchException", []string{"delete-stream", "--stream-arn", created.StreamARN, "--current-version", "0000"}},
			{"retention version mismatch", "VersionMismatchException", []string{"update-data-retention", "--stream-name", "cli-stream",
				"--current-version", "0000", "--operation", "INCREASE_DATA_RETENTION", "--data-retention-change-in-hours", "6"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				cli := &awsCLI{t: t, bin: cli.bin, url: cli.url, home: cli.home}
				cli.fails(tc.want, tc.args...)
			})
		}
	})

	cli.ok(nil, "update-data-retention", "--stream-name", "cli-stream", "--current-version", si.Version,
		"--operation", "INCREASE_DATA_RETENTION", "--data-retention-change-in-hours", "6")
	cli.ok(nil, "tag-stream", "--stream-name", "cli-stream", "--tags", "env=prod,owner=me")
	cli.ok(nil, "untag-stream", "--stream-arn", created.StreamARN, "--tag-key-list", "team")
	var tags struct{ Tags map[string]string }
	cli.ok(&tags, "list-tags-for-stream", "--stream-name", "cli-stream")
	if len(tags.Tags) != 2 || tags.Tags["env"] != "prod" || tags.Tags["owner"] != "me" {
		t.Errorf("tags = %v", tags.Tags)
	}

	cli.ok(nil, "create-stream", "--stream-name", "cli-other")
	var list struct {
		StreamInfoList []struct {
			StreamName           string
			DataRetentionInHours int
		}
		NextToken string
	}
	// --page-size 1 makes the CLI follow NextToken across pages.
	cli.ok(&list, "list-streams", "--page-size", "1")
	if len(list.StreamInfoList) != 2 || list.StreamInfoList[0].StreamName != "cli-other" ||
		list.StreamInfoList[1].StreamName != "cli-stream" || list.StreamInfoList[1].DataRetentionInHours != 30 {
		t.Errorf("list-streams: %+v", list)
	}

	var ep struct{ DataEndpoint string }
	cli.ok(&ep, "get-data-endpoint", "--stream-name", "cli-stream", "--api-name", "GET_MEDIA")
	if ep.DataEndpoint != e.ts.URL {
		t.Errorf("DataEndpoint = %q, want %q", ep.DataEndpoint, e.ts.URL)
	}

	cli.ok(nil, "delete-stream", "--stream-arn", created.StreamARN)
	cli.fails("ResourceNotFoundException", "describe-stream", "--stream-arn", created.StreamARN)
}
