package server

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// post sends body to path and returns the status, headers and body.
func (e *controlEnv) post(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if id := resp.Header.Get("x-amzn-RequestId"); !uuidPattern.MatchString(id) {
		t.Errorf("%s %s: x-amzn-RequestId = %q, want a v4 UUID", method, path, id)
	}
	return resp.StatusCode, resp.Header, b
}

func TestRawErrors(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t, func(c *Config) { c.MaxRequestBody = 4096 })
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed", "POST", "/createStream", `{"StreamName":`, 400, codeInvalidArgument},
		{"not an object", "POST", "/describeStream", `["s"]`, 400, codeInvalidArgument},
		{"string body", "POST", "/describeStream", `"s"`, 400, codeInvalidArgument},
		{"trailing garbage", "POST", "/describeStream", `{"StreamName":"s"} x`, 400, codeInvalidArgument},
		{"name wrong type", "POST", "/createStream", `{"StreamName":5}`, 400, codeInvalidArgument},
		{"retention string", "POST", "/createStream", `{"StreamName":"s","DataRetentionInHours":"24"}`, 400, codeInvalidArgument},
		{"retention fraction", "POST", "/createStream", `{"StreamName":"s","DataRetentionInHours":1.5}`, 400, codeInvalidArgument},
		{"retention huge", "POST", "/createStream", `{"StreamName":"s","DataRetentionInHours":1e30}`, 400, codeInvalidArgument},
		{"tags list", "POST", "/createStream", `{"StreamName":"s","Tags":["a"]}`, 400, codeInvalidArgument},
		{"tag value number", "POST", "/createStream", `{"StreamName":"s","Tags":{"a":1}}`, 400, codeInvalidArgument},
		{"max results string", "POST", "/listStreams", `{"MaxResults":"10"}`, 400, codeInvalidArgument},
		{"oversized", "POST", "/createStream", `{"StreamName":"s","DeviceName":"` + strings.Repeat("a", 5000) + `"}`, 400, codeInvalidArgument},
		{"invalid utf8 name", "POST", "/createStream", "{\"StreamName\":\"\xff\"}", 400, codeInvalidArgument},
		{"empty body create", "POST", "/createStream", ``, 400, codeInvalidArgument},
		{"delete without arn", "POST", "/deleteStream", `{"StreamName":"s"}`, 400, codeInvalidArgument},
		{"tag without value", "POST", "/TagResource", `{"ResourceARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/s/1","Tags":[{"Key":"a"}]}`, 400, codeInvalidArgument},
		{"update without version", "POST", "/updateStream", `{"StreamName":"s"}`, 400, codeInvalidArgument},
		{"retention without operation", "POST", "/updateDataRetention", `{"StreamName":"s","CurrentVersion":"abc","DataRetentionChangeInHours":1}`, 400, codeInvalidArgument},
		{"endpoint without api", "POST", "/getDataEndpoint", `{"StreamName":"s"}`, 400, codeInvalidArgument},
		{"null body describe", "POST", "/describeStream", `null`, 400, codeInvalidArgument},
		{"not found", "POST", "/describeStream", `{"StreamName":"s"}`, 404, codeResourceNotFound},
		{"unknown path", "POST", "/nope", `{}`, 404, "UnknownOperationException"},
		{"wrong case path", "POST", "/DescribeStream", `{}`, 404, "UnknownOperationException"},
		{"GET", "GET", "/describeStream", ``, 405, "MethodNotAllowedException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := e.post(t, tc.method, tc.path, tc.body)
			if status != tc.status || h.Get("x-amzn-ErrorType") != tc.code {
				t.Errorf("status %d, type %q; want %d, %q (body %s)", status, h.Get("x-amzn-ErrorType"), tc.status, tc.code, body)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var eb map[string]any
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if eb["__type"] != tc.code || eb["Message"] == "" || eb["Message"] == nil || len(eb) != 2 {
				t.Errorf("body = %s", body)
			}
		})
	}
	all, _ := e.store.ListStreams(t.Context())
	if len(all) != 0 {
		t.Errorf("store has %d streams after bad requests", len(all))
	}
}

func TestRawSuccess(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t, func(c *Config) { c.Now = func() time.Time { return time.UnixMilli(1705489836420) } })
	// Unknown members are ignored; Content-Type is not required.
	status, _, body := e.post(t, "POST", "/createStream", `{"StreamName":"s","Future":{"x":[1,2]},"DataRetentionInHours":24}`)
	if status != 200 {
		t.Fatalf("create: %d %s", status, body)
	}
	var created map[string]any
	if err := json.Unmarshal(body, &created); err != nil || len(created) != 1 || created["StreamARN"] == nil {
		t.Errorf("create body = %s", body)
	}
	// An empty body is {}: here ListStreams with defaults.
	status, h, body := e.post(t, "POST", "/listStreams", ``)
	if status != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("list: %d %s", status, body)
	}
	// Timestamps are JSON numbers (epoch seconds, ms precision, trailing zeros dropped); unset
	// optional members are absent, not null.
	want := `{"StreamInfoList":[{"StreamName":"s","StreamARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/s/1705489836420",` +
		`"KmsKeyId":"arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo","Version":"VERSION","Status":"ACTIVE",` +
		`"CreationTime":1705489836.42,"DataRetentionInHours":24}]}`
	got := regexp.MustCompile(`"Version":"[A-Za-z0-9]{20}"`).ReplaceAllString(string(body), `"Version":"VERSION"`)
	if got != want {
		t.Errorf("list body\n got %s\nwant %s", got, want)
	}
	status, _, body = e.post(t, "POST", "/deleteStream", `{"StreamARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/s/1705489836420"}`)
	if status != 200 || string(body) != "{}" {
		t.Errorf("delete: %d %s", status, body)
	}
}

func TestTimestampJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"1705489836", time.Unix(1705489836, 0)},
		{"1705489836.421", time.UnixMilli(1705489836421)},
		{"1.705489836421E9", time.UnixMilli(1705489836421)},
		{"1.705489836421e+9", time.UnixMilli(1705489836421)},
		{"1700000000.123456", time.UnixMicro(1700000000123456)},
		{"0", time.Unix(0, 0)},
		{"-1.5", time.UnixMilli(-1500)},
		{"4300000000.001", time.UnixMilli(4300000000001)}, // a float64 rounded to the µs: .001001
		{"8600000000.001", time.UnixMilli(8600000000001)}, // .000999
		{"1700000000.123456789", time.Unix(1700000000, 123456789)},
		{"-0.001", time.UnixMilli(-1)},
	} {
		var ts Timestamp
		if err := json.Unmarshal([]byte(tc.in), &ts); err != nil || !ts.Equal(tc.want) {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", tc.in, ts.Time, err, tc.want)
		}
	}
	for _, bad := range []string{`"1705489836"`, `true`, `1e300`, `{}`, `[]`} {
		var ts Timestamp
		if err := json.Unmarshal([]byte(bad), &ts); err == nil {
			t.Errorf("Unmarshal(%s) succeeded: %v", bad, ts.Time)
		}
	}
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{1705489836421, "1705489836.421"},
		{1705489836400, "1705489836.4"},
		{1705489836020, "1705489836.02"},
		{1705489836000, "1705489836"},
		{0, "0"},
		{-1500, "-1.5"},
	} {
		b, err := json.Marshal(Timestamp{time.UnixMilli(tc.ms)})
		if err != nil || string(b) != tc.want {
			t.Errorf("Marshal(%d ms) = %s, %v; want %s", tc.ms, b, err, tc.want)
		}
	}
}

func FuzzDecodeCreateStream(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"StreamName":"s"}`, `{"StreamName":5}`, `[`, `{"Tags":{"a":"b"}}`, `{"DataRetentionInHours":1e9}`} {
		f.Add(s)
	}
	e := newControlEnv(f)
	f.Fuzz(func(t *testing.T, body string) {
		req, err := http.NewRequestWithContext(t.Context(), "POST", e.ts.URL+"/createStream", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
	})
}
