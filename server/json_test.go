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
