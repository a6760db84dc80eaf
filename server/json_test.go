package server

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// A member of the wrong type is named as the client wrote it. encoding/json names the Go type of
// an embedded struct in its path: GetClip's StreamName was "Member streamRef.StreamName".
func TestWrongTypeMemberPath(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	for _, tc := range []struct{ path, body, want string }{
		{"/getClip", `{"StreamName":1}`, "Member StreamName has the wrong type (got JSON number)."},
		{"/listFragments", `{"StreamARN":true}`, "Member StreamARN has the wrong type (got JSON bool)."},
		{"/getClip", `{"StreamName":"cam","ClipFragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":"x"}}}`,
			"Member ClipFragmentSelector.TimestampRange.StartTimestamp has the wrong type (got JSON non-number timestamp)."},
		{"/getHLSStreamingSessionURL", `{"StreamName":"cam","Expires":"300"}`, "Member Expires has the wrong type (got JSON string)."},
	} {
		resp := e.post(t, t.Context(), tc.path, json.RawMessage(tc.body))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var msg struct{ Message string }
		_ = json.Unmarshal(b, &msg)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("x-amzn-ErrorType") != codeInvalidArgument || msg.Message != tc.want {
			t.Errorf("POST %s %s: %d %s %s, want 400 %s %q", tc.path, tc.body, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b, codeInvalidArgument, tc.want)
		}
	}
}

// Member names are case-sensitive, as on the real service (kvs-api.md §1.2): a member whose name
// differs from one of the operation's only in case is an unknown member, ignored. encoding/json
// matches names case-insensitively, so {"streamName":"cam"} described cam here (and would fail
// against AWS), and a second, differently cased copy of a member overrode the first.
func TestMemberNamesCaseSensitive(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	for _, tc := range []struct {
		path, body string
		status     int
		typ        string
	}{
		{"/describeStream", `{"streamName":"cam"}`, 400, codeInvalidArgument},
		{"/describeStream", `{"STREAMNAME":"cam"}`, 400, codeInvalidArgument},
		{"/describeStream", `{"StreamName":"other","streamname":"cam"}`, 404, codeResourceNotFound},
		{"/getMedia", `{"StreamName":"cam","StartSelector":{"startSelectorType":"EARLIEST"}}`, 400, codeInvalidArgument},
		{"/describeStream", `{"\u0073treamName":"cam"}`, 400, codeInvalidArgument}, // escaped: refused
		{"/describeStream", `{"\u0053treamName":"cam"}`, 200, ""},                  // escaped, exact
		{"/describeStream", `{"ſtreamName":"cam"}`, 400, codeInvalidArgument},      // U+017F folds to s
		{"/listFragments", `{"StreamName":"cam","FragmentSelector":{"fragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":1,"EndTimestamp":2}}}`, 400, codeInvalidArgument},
		{"/getMedia", `{"StartSelector":{"StartSelectorType":"EARLIEST"},"streamName":"x","StreamName":"cam"}`, 200, ""},
		{"/createStream", `{"Tags":{"k":"v"},"StreamName":"cam3","streamName":"x","StreamStorageConfiguration":{"defaultStorageTier":"WARM"}}`, 400, codeInvalidArgument}, // DefaultStorageTier missing
		{"/TagResource", `{"Tags":[{"Key":"a","Value":"b"},{"key":"c","Key":"d","Value":"e"}],"resourceARN":"x","ResourceARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1"}`, 404, codeResourceNotFound},
		{"/createStream", `{"StreamName":"cam2","Tags":{"streamName":"x"}}`, 200, ""}, // a map's keys are data
		{"/describeStream", `{"StreamName":"cam"}`, 200, ""},
	} {
		resp := e.post(t, t.Context(), tc.path, json.RawMessage(tc.body), "x-kvs-no-follow", "1")
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("x-amzn-ErrorType") != tc.typ {
			t.Errorf("POST %s %s: %d %s %.200s, want %d %s", tc.path, tc.body, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b, tc.status, tc.typ)
		}
	}
}
