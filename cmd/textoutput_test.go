package cmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// TestWriteText checks the text format against what awscli's text.format_text prints for the same
// values (each want below is its output, from the AWS CLI 2.9 of Debian 12).
func TestWriteText(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"scalar", `"arn:x"`, "arn:x\n"},
		{"bare list", `["a", "b"]`, "a\tb\n"},
		{"scalar list under key", `{"Keys": ["k1", "k2"], "Name": "n"}`, "n\nKEYS\tk1\nKEYS\tk2\n"},
		{"nested object", `{"A": {"B": "1", "C": {"D": "2"}}, "Z": "z"}`, "z\nA\t1\nC\t2\n"},
		{"objects with different keys", `{"L": [{"a": "1"}, {"b": "2", "n": {"x": "3"}}]}`, "L\t1\t\nL\t\t2\nN\t3\n"},
		{"mixed list", `{"L": ["s1", ["t1", "t2"], "s2"]}`, "L\ts1\nL\ts2\nL\tt1\nL\tt2\n"},
		{"empty", `{"L": [], "M": {}}`, ""},
		{"list of lists", `[["a", "b"], ["c"]]`, "a\tb\nc\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tc.value), &v); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := writeText(&b, v); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("writeText(%s) = %q, want %q", tc.value, b.String(), tc.want)
			}
		})
	}
}

// Timestamps print as Python's isoformat of the local time: microseconds only when there are any.
func TestTextTime(t *testing.T) {
	if _, off := time.UnixMilli(1705489836421).Zone(); off != 0 {
		t.Skip("the local time zone is not UTC: the cases are for UTC")
	}
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{1705489836421, "2024-01-17T11:10:36.421000+00:00"},
		{1705489836000, "2024-01-17T11:10:36+00:00"},
		{1705489836400, "2024-01-17T11:10:36.400000+00:00"},
	} {
		if got := textTime(time.UnixMilli(tc.ms)); got != tc.want {
			t.Errorf("textTime(%d ms) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

// kvs --output text prints what `aws --output text` prints for the same operation against the
// same server, byte for byte: streams with and without tags, device name and media type, a stream's
// fragments, and empty answers.
func TestOutputTextAsAWSCLI(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	url, _ := e2eServer(t, nil)
	cli := testutil.NewAWSCLI(t, url)
	mustRun(t, url, nil, "put-media", "--stream-name", "s", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	kvsText := func(args ...string) string {
		t.Helper()
		return mustRun(t, url, nil, append(args, "--output", "text")...)
	}
	awsText := func(args ...string) string {
		t.Helper()
		out, stderr, code := cli.Run(append(args, "--output", "text")...)
		if code != 0 {
			t.Fatalf("aws %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return string(out)
	}
	check := func(kvs, aws string) {
		t.Helper()
		if kvs != aws {
			t.Errorf("kvs --output text:\n%q\naws --output text:\n%q", kvs, aws)
		}
	}
	check(kvsText("list-streams", "--name-prefix", "none"), awsText("kinesisvideo", "list-streams",
		"--stream-name-condition", "ComparisonOperator=BEGINS_WITH,ComparisonValue=none"))
	created := kvsText("create-stream", "--stream-name", "cam-1", "--data-retention-in-hours", "24", "--media-type", "video/h264",
		"--device-name", "porch-cam", "--tags", "team=video,site=lab 2nd floor,a=1")
	check(created, awsText("kinesisvideo", "describe-stream", "--stream-name", "cam-1", "--query", "StreamInfo.StreamARN"))
	arn := strings.TrimSpace(created)
	if !strings.HasPrefix(arn, "arn:aws:kinesisvideo:") {
		t.Fatalf("create-stream --output text: %q, want the ARN", created)
	}
	mustRun(t, url, nil, "create-stream", "--stream-name", "cam-2")
	for _, args := range [][]string{
		{"list-streams"},
		{"describe-stream", "--stream-name", "cam-1"},
		{"describe-stream", "--stream-name", "cam-2"},
		{"list-tags-for-stream", "--stream-name", "cam-1"},
		{"list-tags-for-stream", "--stream-name", "cam-2"},
		{"list-tags-for-stream", "--stream-arn", arn},
	} {
		got := kvsText(args...)
		if args[0] == "list-streams" && strings.Count(got, "\n") != 3 {
			t.Errorf("list-streams: %q, want 3 streams", got)
		}
		check(got, awsText(append([]string{"kinesisvideo"}, args...)...))
	}
	frags := kvsText("list-fragments", "--stream-name", "s")
	if strings.Count(frags, "FRAGMENTS\t") != 4 {
		t.Errorf("list-fragments: %q, want 4 fragments", frags)
	}
	check(frags, awsText("kinesis-video-archived-media", "list-fragments", "--stream-name", "s"))
	check(kvsText("list-fragments", "--stream-name", "cam-2"), awsText("kinesis-video-archived-media", "list-fragments", "--stream-name", "cam-2"))
	// The verbs whose answer is empty print nothing, and take --output as the AWS CLI does.
	for _, args := range [][]string{
		{"tag-stream", "--stream-name", "cam-2", "--tags", "k=v"},
		{"untag-stream", "--stream-name", "cam-2", "--tag-key-list", "k"},
		{"update-stream", "--stream-name", "cam-2", "--media-type", "video/h265"},
		{"update-data-retention", "--stream-name", "cam-2", "--operation", "INCREASE_DATA_RETENTION", "--data-retention-change-in-hours", "1"},
		{"delete-stream", "--stream-name", "cam-2"},
	} {
		check(kvsText(args...), "")
	}
}
