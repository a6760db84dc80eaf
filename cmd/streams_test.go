package cmd

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// kvsServer starts a server on httptest with a fixed clock (each stream created 1 s after the
// previous one, from 2024-01-17T11:10:36.421Z) and returns its URL and store.
func kvsServer(t *testing.T) (string, store.Store) {
	t.Helper()
	st := store.NewMem()
	now := time.UnixMilli(1705489835421)
	srv, err := server.New(server.Config{Store: st, Now: func() time.Time { now = now.Add(time.Second); return now }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
	return ts.URL, st
}

// runEnv is an Env for calling run functions directly against endpoint.
func runEnv(t *testing.T, endpoint string) (*Env, *bytes.Buffer) {
	t.Helper()
	env, out, errb := testEnv(t, nil)
	env.Config = viper.New()
	env.Config.Set("endpoint", endpoint)
	env.Config.Set("region", "us-east-1")
	env.Log = slog.New(slog.NewTextHandler(errb, nil))
	return env, out
}

func TestStreamOptionsValidate(t *testing.T) {
	t.Parallel()
	named := streamRef{Name: "s"}
	cases := []struct {
		name    string
		o       interface{ validate() error }
		wantErr string
	}{
		{"create ok", createStreamOptions{StreamName: "s", RetentionHours: 24, Tags: []string{"a=1,b=x=y", "c="}, Output: "json"}, ""},
		{"create table", createStreamOptions{StreamName: "s", Output: "table"}, ""},
		{"create no name", createStreamOptions{Output: "json"}, "--stream-name"},
		{"create retention", createStreamOptions{StreamName: "s", RetentionHours: 87601, Output: "json"}, "--data-retention-in-hours"},
		{"create negative retention", createStreamOptions{StreamName: "s", RetentionHours: -1, Output: "json"}, "--data-retention-in-hours"},
		{"create bad tags", createStreamOptions{StreamName: "s", Tags: []string{"novalue"}, Output: "json"}, "--tags"},
		{"create empty tag key", createStreamOptions{StreamName: "s", Tags: []string{"=v"}, Output: "json"}, "--tags"},
		{"create output", createStreamOptions{StreamName: "s", Output: "yaml"}, "--output"},
		{"describe ok", streamOutputOptions{Stream: named, Output: "json"}, ""},
		{"describe by arn", streamOutputOptions{Stream: streamRef{ARN: "arn:x"}, Output: "table"}, ""},
		{"describe neither", streamOutputOptions{Output: "json"}, "--stream-name or --stream-arn"},
		{"list ok", listStreamsOptions{Output: "json"}, ""},
		{"list condition", listStreamsOptions{StreamNameCondition: "ComparisonOperator=BEGINS_WITH,ComparisonValue=cam", Output: "json"}, ""},
		{"list condition blanks", listStreamsOptions{StreamNameCondition: "ComparisonOperator=BEGINS_WITH, ComparisonValue=cam", Output: "json"}, ""},
		{"list condition operator", listStreamsOptions{StreamNameCondition: "ComparisonOperator=ENDS_WITH,ComparisonValue=cam", Output: "json"}, "BEGINS_WITH"},
		{"list condition garbage", listStreamsOptions{StreamNameCondition: "cam", Output: "json"}, "--stream-name-condition"},
		{"list both prefixes", listStreamsOptions{StreamNameCondition: "ComparisonValue=a", NamePrefix: "b", Output: "json"}, "not both"},
		{"list negative max", listStreamsOptions{MaxResults: -1, Output: "json"}, "--max-results"},
		{"delete ok", deleteStreamOptions{Stream: named}, ""},
		{"delete neither", deleteStreamOptions{}, "--stream-name or --stream-arn"},
		{"retention ok", updateDataRetentionOptions{Stream: named, Operation: "DECREASE_DATA_RETENTION", ChangeHours: 1}, ""},
		{"retention operation", updateDataRetentionOptions{Stream: named, Operation: "increase", ChangeHours: 1}, "--operation"},
		{"retention zero", updateDataRetentionOptions{Stream: named, Operation: "INCREASE_DATA_RETENTION"}, "--data-retention-change-in-hours"},
		{"retention no stream", updateDataRetentionOptions{Operation: "INCREASE_DATA_RETENTION", ChangeHours: 1}, "--stream-name"},
		{"tag ok", tagStreamOptions{Stream: named, Tags: []string{"a=b"}}, ""},
		{"tag none", tagStreamOptions{Stream: named}, "--tags is required"},
		{"tag bad", tagStreamOptions{Stream: named, Tags: []string{"a"}}, "--tags"},
		{"untag ok", untagStreamOptions{Stream: named, Keys: []string{"a,b", "c"}}, ""},
		{"untag none", untagStreamOptions{Stream: named, Keys: []string{","}}, "--tag-key-list"},
		{"list tags ok", streamOutputOptions{Stream: named, Output: "table"}, ""},
		{"list tags text", streamOutputOptions{Stream: named, Output: "text"}, ""},
		{"list tags output", streamOutputOptions{Stream: named, Output: "yaml"}, "--output"},
		{"tag output", tagStreamOptions{Stream: named, Tags: []string{"a=b"}, Output: "yaml"}, "--output"},
		{"serve ok", serveOptions{Listen: "127.0.0.1:0"}, ""},
		{"serve memory", serveOptions{Listen: ":4567", Memory: true}, ""},
		{"serve memory and dir", serveOptions{Listen: ":4567", Memory: true, DataDir: "/tmp/x"}, "--memory"},
		{"serve listen", serveOptions{Listen: "4567"}, "--listen"},
		{"serve advertise", serveOptions{Listen: ":4567", AdvertiseURL: "kvs:4567"}, "--advertise-url"},
		{"serve advertise path", serveOptions{Listen: ":4567", AdvertiseURL: "http://kvs:4567/x"}, "--advertise-url"},
		{"serve advertise ok", serveOptions{Listen: ":4567", AdvertiseURL: "https://kvs.example.com/"}, ""},
		{"serve auth sigv4", serveOptions{Listen: ":4567", Auth: "sigv4", CredentialsFile: "/k"}, ""},
		{"serve auth without file", serveOptions{Listen: ":4567", Auth: "sigv4"}, "--credentials-file"},
		{"serve file without auth", serveOptions{Listen: ":4567", Auth: "none", CredentialsFile: "/k"}, "--auth sigv4"},
		{"serve auth unknown", serveOptions{Listen: ":4567", Auth: "basic"}, "--auth"},
		{"serve tls pair", serveOptions{Listen: ":4567", TLSCert: "c.pem", TLSKey: "k.pem"}, ""},
		{"serve tls half", serveOptions{Listen: ":4567", TLSCert: "c.pem"}, "--tls-key"},
		{"serve quota size", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "500GB"}}, ""},
		{"serve quota percent", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "90%"}}, ""},
		{"serve quota bad", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "lots"}}, "such as 500GB"},
		{"serve quota 0%", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "0%"}}, "percentage"},
		// A number with no unit is bytes: "500" (meant as 500GB) let each upload delete the last.
		{"serve quota bare number", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "500"}}, "no unit is bytes"},
		{"serve quota tiny", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "64KiB"}}, "at least 1MiB"},
		{"serve quota 1MiB", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "1MiB"}}, ""},
		{"serve quota NaN%", serveOptions{Listen: ":4567", opsOptions: opsOptions{MaxDiskUsage: "NaN%"}}, "percentage"},
		{"serve quota memory", serveOptions{Listen: ":4567", Memory: true, opsOptions: opsOptions{MaxDiskUsage: "1GB"}}, "--memory"},
		{"serve quota cluster", serveOptions{Listen: ":4567", Index: "postgres://h/db", Objects: "s3://b", opsOptions: opsOptions{MaxDiskUsage: "1GB"}}, "kvs:max-bytes"},
		// A cluster node on every interface must be told the URL others reach it at: the default,
		// http://127.0.0.1:PORT, sent cameras on the network to their own loopback, and nodes on
		// several hosts with the same port all registered that one URL, each start freeing the
		// others' leases.
		{"serve cluster wildcard listen", serveOptions{Listen: "0.0.0.0:4567", Index: "postgres://h/db", Objects: "s3://b"}, "--advertise-url"},
		{"serve cluster any host", serveOptions{Listen: ":4567", Index: "postgres://h/db", Objects: "s3://b"}, "--advertise-url"},
		{"serve cluster ipv6 wildcard", serveOptions{Listen: "[::]:4567", Index: "postgres://h/db", Objects: "s3://b"}, "--advertise-url"},
		{"serve cluster wildcard advertised", serveOptions{Listen: "0.0.0.0:4567", AdvertiseURL: "http://node1.example:4567", Index: "postgres://h/db", Objects: "s3://b"}, ""},
		{"serve cluster loopback", serveOptions{Listen: "127.0.0.1:4567", Index: "postgres://h/db", Objects: "s3://b"}, ""},
		{"serve metrics listen", serveOptions{Listen: ":4567", opsOptions: opsOptions{MetricsListen: "9464"}}, "--metrics-listen"},
		{"serve webhook", serveOptions{Listen: ":4567", opsOptions: opsOptions{Webhooks: []string{"https://h.example/x"}, WebhookSecret: "s", WebhookPersisted: true}}, ""},
		{"serve webhook url", serveOptions{Listen: ":4567", opsOptions: opsOptions{Webhooks: []string{"h.example/x"}}}, "--webhook"},
		{"serve webhook secret alone", serveOptions{Listen: ":4567", opsOptions: opsOptions{WebhookSecret: "s"}}, "KVS_WEBHOOK_SECRET in the environment) needs --webhook"},
		{"serve webhook persisted alone", serveOptions{Listen: ":4567", opsOptions: opsOptions{WebhookPersisted: true}}, "--webhook-persisted needs --webhook"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseTags(t *testing.T) {
	t.Parallel()
	got, err := parseTags([]string{"a=1,b=x=y", "c=", "a=2"})
	if want := map[string]string{"a": "2", "b": "x=y", "c": ""}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseTags = %v, %v; want %v", got, err, want)
	}
}

func TestRunStreamCommands(t *testing.T) {
	t.Parallel()
	url, st := kvsServer(t)
	ctx := t.Context()
	env, out := runEnv(t, url)

	if err := runCreateStream(ctx, env, createStreamOptions{StreamName: "cam-1", MediaType: "video/h264", RetentionHours: 2,
		Tags: []string{"team=video"}, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	var created struct{ StreamARN string }
	if err := json.Unmarshal(out.Bytes(), &created); err != nil || created.StreamARN != "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam-1/1705489836421" {
		t.Fatalf("create output %q: %v", out, err)
	}
	for _, name := range []string{"cam-2", "other"} {
		if err := runCreateStream(ctx, env, createStreamOptions{StreamName: name, Output: outputTable}); err != nil {
			t.Fatal(err)
		}
	}

	// Read-only commands leave the store as it was.
	before, _ := st.ListStreams(ctx)

	out.Reset()
	if err := runDescribeStream(ctx, env, streamOutputOptions{Stream: streamRef{Name: "cam-1"}, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	var desc struct{ StreamInfo map[string]any }
	if err := json.Unmarshal(out.Bytes(), &desc); err != nil {
		t.Fatal(err)
	}
	si := desc.StreamInfo
	if si["StreamName"] != "cam-1" || si["MediaType"] != "video/h264" || si["DataRetentionInHours"] != 2.0 ||
		si["CreationTime"] != "2024-01-17T11:10:36.421Z" || si["Status"] != "ACTIVE" || si["DeviceName"] != nil {
		t.Errorf("describe-stream JSON: %s", out)
	}
	version := si["Version"].(string)

	out.Reset()
	if err := runDescribeStream(ctx, env, streamOutputOptions{Stream: streamRef{ARN: created.StreamARN}, Output: outputTable}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "StreamName            cam-1\n") || !strings.Contains(out.String(), "DeviceName            -\n") {
		t.Errorf("describe-stream table:\n%s", out)
	}

	out.Reset()
	if err := runListStreams(ctx, env, listStreamsOptions{NamePrefix: "cam", Output: outputTable}); err != nil {
		t.Fatal(err)
	}
	wantTable := `NAME   STATUS  RETENTION_HOURS  MEDIA_TYPE  CREATED                   ARN
cam-1  ACTIVE  2                video/h264  2024-01-17T11:10:36.421Z  arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam-1/1705489836421
cam-2  ACTIVE  0                -           2024-01-17T11:10:37.421Z  arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam-2/1705489837421
`
	if out.String() != wantTable {
		t.Errorf("list-streams table:\n%s\nwant:\n%s", out, wantTable)
	}

	// --max-results pages through the API and hands back a token.
	var list struct {
		StreamInfoList []struct{ StreamName string }
		NextToken      string
	}
	out.Reset()
	if err := runListStreams(ctx, env, listStreamsOptions{MaxResults: 2, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list.StreamInfoList) != 2 || list.NextToken == "" {
		t.Fatalf("list-streams page 1: %s", out)
	}
	out.Reset()
	if err := runListStreams(ctx, env, listStreamsOptions{MaxResults: 2, NextToken: list.NextToken, StreamNameCondition: "", Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	list.NextToken = ""
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list.StreamInfoList) != 1 || list.StreamInfoList[0].StreamName != "other" || list.NextToken != "" {
		t.Fatalf("list-streams page 2: %s", out)
	}
	after, _ := st.ListStreams(ctx)
	if !reflect.DeepEqual(before, after) {
		t.Error("read-only commands changed the store")
	}

	// Tags.
	if err := runTagStream(ctx, env, tagStreamOptions{Stream: streamRef{Name: "cam-1"}, Tags: []string{"env=dev,owner=me"}}); err != nil {
		t.Fatal(err)
	}
	if err := runUntagStream(ctx, env, untagStreamOptions{Stream: streamRef{ARN: created.StreamARN}, Keys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runListTagsForStream(ctx, env, streamOutputOptions{Stream: streamRef{Name: "cam-1"}, Output: outputJSON}); err != nil {
		t.Fatal(err)
	}
	if want := "{\n    \"Tags\": {\n        \"env\": \"dev\",\n        \"owner\": \"me\"\n    }\n}\n"; out.String() != want {
		t.Errorf("list-tags-for-stream JSON:\n%s\nwant:\n%s", out, want)
	}
	out.Reset()
	if err := runListTagsForStream(ctx, env, streamOutputOptions{Stream: streamRef{Name: "cam-1"}, Output: outputTable}); err != nil {
		t.Fatal(err)
	}
	if want := "KEY    VALUE\nenv    dev\nowner  me\n"; out.String() != want {
		t.Errorf("list-tags-for-stream table:\n%s", out)
	}

	// Retention: the version is looked up when not given; a stale one is refused.
	if err := runUpdateDataRetention(ctx, env, updateDataRetentionOptions{Stream: streamRef{Name: "cam-1"},
		Operation: "INCREASE_DATA_RETENTION", ChangeHours: 10}); err != nil {
		t.Fatal(err)
	}
	err := runUpdateDataRetention(ctx, env, updateDataRetentionOptions{Stream: streamRef{Name: "cam-1"}, CurrentVersion: version,
		Operation: "INCREASE_DATA_RETENTION", ChangeHours: 10})
	if err == nil || !strings.Contains(err.Error(), "VersionMismatchException") {
		t.Errorf("stale version: %v", err)
	}
	if s, _ := st.GetStream(ctx, "cam-1"); s.RetentionHours != 12 {
		t.Errorf("retention = %d, want 12", s.RetentionHours)
	}

	// Delete by name (ARN looked up), then not found.
	if err := runDeleteStream(ctx, env, deleteStreamOptions{Stream: streamRef{Name: "cam-1"}}); err != nil {
		t.Fatal(err)
	}
	err = runDescribeStream(ctx, env, streamOutputOptions{Stream: streamRef{Name: "cam-1"}, Output: outputJSON})
	if !isNotFound(err) {
		t.Fatalf("describe after delete: %v (isNotFound false)", err)
	}
	if want := "describe-stream cam-1: ResourceNotFoundException: The requested stream is not found or not active."; err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}
	err = runDeleteStream(ctx, env, deleteStreamOptions{Stream: streamRef{ARN: created.StreamARN}})
	if !isNotFound(err) {
		t.Errorf("delete again: %v", err)
	}
}

func TestStreamCommandsThroughRoot(t *testing.T) {
	t.Parallel()
	url, _ := kvsServer(t)
	run := func(args ...string) (int, string, string) {
		env, out, errb := testEnv(t, nil)
		code := Run(t.Context(), env, append(args, "--endpoint", url))
		return code, out.String(), errb.String()
	}
	code, out, errOut := run("create-stream", "--stream-name", "cam", "--data-retention-in-hours", "5", "--tags", "a=1", "--tags", "b=2")
	if code != ExitOK || !strings.Contains(out, `"StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/`) {
		t.Fatalf("create-stream: %d %q %q", code, out, errOut)
	}
	code, out, _ = run("list-tags-for-stream", "--stream-name", "cam", "--output", "table")
	if code != ExitOK || out != "KEY  VALUE\na    1\nb    2\n" {
		t.Errorf("list-tags-for-stream: %d %q", code, out)
	}
	code, out, _ = run("describe-stream", "--stream-name", "cam")
	if code != ExitOK || !strings.Contains(out, `"DataRetentionInHours": 5`) {
		t.Errorf("describe-stream: %d %q", code, out)
	}
	code, _, errOut = run("describe-stream", "--stream-name", "missing")
	if code != ExitNotFound || !strings.Contains(errOut, "ResourceNotFoundException") {
		t.Errorf("describe missing: %d %q", code, errOut)
	}
	code, _, errOut = run("create-stream", "--stream-name", "cam")
	if code != ExitError || !strings.Contains(errOut, "ResourceInUseException") {
		t.Errorf("create twice: %d %q", code, errOut)
	}
	code, _, errOut = run("create-stream")
	if code != ExitUsage || !strings.Contains(errOut, "--stream-name is required") {
		t.Errorf("create without name: %d %q", code, errOut)
	}
	code, _, _ = run("list-streams", "--output", "yaml")
	if code != ExitUsage {
		t.Errorf("--output yaml: %d", code)
	}
	code, _, _ = run("list-streams", "--max-results", "many")
	if code != ExitUsage {
		t.Errorf("--max-results many: %d", code)
	}
	code, _, _ = run("update-data-retention", "--stream-name", "cam", "--operation", "DECREASE_DATA_RETENTION", "--data-retention-change-in-hours", "5")
	if code != ExitOK {
		t.Errorf("update-data-retention: %d", code)
	}
	code, _, errOut = run("update-data-retention", "--stream-name", "cam", "--operation", "DECREASE_DATA_RETENTION", "--data-retention-change-in-hours", "1")
	if code != ExitError || !strings.Contains(errOut, "InvalidArgumentException") {
		t.Errorf("retention below 0: %d %q", code, errOut)
	}
	code, out, _ = run("delete-stream", "--stream-name", "cam")
	if code != ExitOK || out != "" {
		t.Errorf("delete-stream: %d %q", code, out)
	}
	code, _, _ = run("delete-stream", "--stream-name", "cam")
	if code != ExitNotFound {
		t.Errorf("delete missing: %d", code)
	}
}

// The AWS CLI's shorthand drops the blanks around "=" and after ",": `--tags "team=video, site = lab "`
// tags team=video and site=lab. kvs stored the keys " site " and the value " lab ", silently.
func TestTagsShorthandBlanksAsAWSCLI(t *testing.T) {
	t.Parallel()
	url, _ := kvsServer(t)
	run := func(args ...string) (int, string, string) {
		env, out, errb := testEnv(t, nil)
		code := Run(t.Context(), env, append(args, "--endpoint", url))
		return code, out.String(), errb.String()
	}
	if code, _, errOut := run("create-stream", "--stream-name", "cam", "--tags", "team=video, site = lab "); code != ExitOK {
		t.Fatalf("create-stream: %d %q", code, errOut)
	}
	if code, _, errOut := run("tag-stream", "--stream-name", "cam", "--tags", " owner= ops ,tier =gold"); code != ExitOK {
		t.Fatalf("tag-stream: %d %q", code, errOut)
	}
	code, out, _ := run("list-tags-for-stream", "--stream-name", "cam")
	var got struct{ Tags map[string]string }
	if err := json.Unmarshal([]byte(out), &got); code != ExitOK || err != nil {
		t.Fatalf("list-tags-for-stream: %d %q %v", code, out, err)
	}
	if want := map[string]string{"team": "video", "site": "lab", "owner": "ops", "tier": "gold"}; !reflect.DeepEqual(got.Tags, want) {
		t.Errorf("tags = %q, want %q (as the AWS CLI sends them)", got.Tags, want)
	}
}

// The AWS CLI takes JSON for any structure, map or list parameter: --tags '{"k":"v"}',
// --tag-key-list '["k"]', --stream-name-condition '{"ComparisonOperator":...}'. kvs refused the
// first and the last (exit 2) and sent the JSON's brackets and quotes as tag keys for the second.
func TestAWSCLIJSONParameters(t *testing.T) {
	t.Parallel()
	url, _ := kvsServer(t)
	run := func(args ...string) (int, string, string) {
		env, out, errb := testEnv(t, nil)
		code := Run(t.Context(), env, append(args, "--endpoint", url))
		return code, out.String(), errb.String()
	}
	for _, name := range []string{"cam-1", "other"} {
		if code, _, errOut := run("create-stream", "--stream-name", name, "--tags", `{"team": "video", "site": "lab 2nd floor"}`); code != ExitOK {
			t.Fatalf("create-stream --tags JSON: %d %q", code, errOut)
		}
	}
	if code, _, errOut := run("tag-stream", "--stream-name", "cam-1", "--tags", `{"owner":"ops"}`); code != ExitOK {
		t.Fatalf("tag-stream --tags JSON: %d %q", code, errOut)
	}
	if code, _, errOut := run("untag-stream", "--stream-name", "cam-1", "--tag-key-list", `["team", "owner"]`); code != ExitOK {
		t.Fatalf("untag-stream --tag-key-list JSON: %d %q", code, errOut)
	}
	code, out, _ := run("list-tags-for-stream", "--stream-name", "cam-1")
	var tags struct{ Tags map[string]string }
	if err := json.Unmarshal([]byte(out), &tags); code != ExitOK || err != nil {
		t.Fatalf("list-tags-for-stream: %d %q %v", code, out, err)
	}
	if want := map[string]string{"site": "lab 2nd floor"}; !reflect.DeepEqual(tags.Tags, want) {
		t.Errorf("tags = %q, want %q", tags.Tags, want)
	}
	code, out, errOut := run("list-streams", "--stream-name-condition", `{"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "cam"}`, "--output", "table")
	if code != ExitOK || strings.Count(out, "\n") != 2 || !strings.Contains(out, "\ncam-1 ") {
		t.Errorf("list-streams --stream-name-condition JSON: %d %q %q", code, out, errOut)
	}
	for _, args := range [][]string{
		{"tag-stream", "--stream-name", "cam-1", "--tags", `{"a": 1}`},
		{"untag-stream", "--stream-name", "cam-1", "--tag-key-list", `["a"`},
		{"list-streams", "--stream-name-condition", `{"ComparisonValue": "cam", "Op": "x"}`},
	} {
		if code, _, errOut := run(args...); code != ExitUsage {
			t.Errorf("%q: %d %q, want a usage error", args, code, errOut)
		}
	}
}

// FuzzStreamFlagForms feeds arbitrary values to the parsers of --tags, --tag-key-list and
// --stream-name-condition (shorthand and JSON forms): no panic, and what the shorthand accepts has
// no blanks around a key or a value and no empty key.
func FuzzStreamFlagForms(f *testing.F) {
	for _, s := range []string{"k=v", "k1=v1, k2 = v2 ", `{"k":"v"}`, `["a","b"]`, "a,b", "=x", "k==v", " {", "[",
		"ComparisonOperator=BEGINS_WITH, ComparisonValue=x", `{"ComparisonOperator":"BEGINS_WITH","ComparisonValue":"s"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if tags, err := parseTags([]string{s}); err == nil && !isJSON(s, '{') {
			for k, v := range tags {
				if k == "" || k != strings.TrimSpace(k) || v != strings.TrimSpace(v) {
					t.Fatalf("--tags %q: key %q value %q", s, k, v)
				}
			}
		}
		_, _ = tagKeys([]string{s})
		_, _ = listStreamsOptions{StreamNameCondition: s}.prefix()
	})
}
