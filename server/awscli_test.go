package server

import (
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
)

// TestAWSCLI drives the server with the real AWS CLI v2 (its commands in one Python, see
// testutil.AWSCLI).
func TestAWSCLI(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newControlEnv(t)
	cli := testutil.NewAWSCLI(t, e.ts.URL)

	var created struct{ StreamARN string }
	cli.OK(&created, "kinesisvideo", "create-stream", "--stream-name", "cli-stream", "--media-type", "video/h264",
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
	cli.OK(&desc, "kinesisvideo", "describe-stream", "--stream-name", "cli-stream")
	si := desc.StreamInfo
	if si.StreamName != "cli-stream" || si.StreamARN != created.StreamARN || si.MediaType != "video/h264" ||
		si.Status != "ACTIVE" || si.DataRetentionInHours != 24 || len(si.Version) != 20 || si.CreationTime == nil {
		t.Errorf("describe-stream: %+v", si)
	}

	t.Run("errors", func(t *testing.T) {
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
				cli.For(t).Fails(tc.want, append([]string{"kinesisvideo"}, tc.args...)...)
			})
		}
	})

	cli.OK(nil, "kinesisvideo", "update-data-retention", "--stream-name", "cli-stream", "--current-version", si.Version,
		"--operation", "INCREASE_DATA_RETENTION", "--data-retention-change-in-hours", "6")
	cli.OK(nil, "kinesisvideo", "tag-stream", "--stream-name", "cli-stream", "--tags", "env=prod,owner=me")
	cli.OK(nil, "kinesisvideo", "untag-stream", "--stream-arn", created.StreamARN, "--tag-key-list", "team")
	var tags struct{ Tags map[string]string }
	cli.OK(&tags, "kinesisvideo", "list-tags-for-stream", "--stream-name", "cli-stream")
	if len(tags.Tags) != 2 || tags.Tags["env"] != "prod" || tags.Tags["owner"] != "me" {
		t.Errorf("tags = %v", tags.Tags)
	}

	cli.OK(nil, "kinesisvideo", "create-stream", "--stream-name", "cli-other")
	var list struct {
		StreamInfoList []struct {
			StreamName           string
			DataRetentionInHours int
		}
		NextToken string
	}
	// --page-size 1 makes the CLI follow NextToken across pages.
	cli.OK(&list, "kinesisvideo", "list-streams", "--page-size", "1")
	if len(list.StreamInfoList) != 2 || list.StreamInfoList[0].StreamName != "cli-other" ||
		list.StreamInfoList[1].StreamName != "cli-stream" || list.StreamInfoList[1].DataRetentionInHours != 30 {
		t.Errorf("list-streams: %+v", list)
	}

	var ep struct{ DataEndpoint string }
	cli.OK(&ep, "kinesisvideo", "get-data-endpoint", "--stream-name", "cli-stream", "--api-name", "GET_MEDIA")
	if ep.DataEndpoint != e.ts.URL {
		t.Errorf("DataEndpoint = %q, want %q", ep.DataEndpoint, e.ts.URL)
	}

	cli.OK(nil, "kinesisvideo", "delete-stream", "--stream-arn", created.StreamARN)
	cli.Fails("ResourceNotFoundException", "kinesisvideo", "describe-stream", "--stream-arn", created.StreamARN)
}
