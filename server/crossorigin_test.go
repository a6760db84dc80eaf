package server

import (
	"net/http"
	"strings"
	"testing"
)

// A web page of another origin cannot have a visitor's browser change a kvs (CSRF): with
// authentication off, a plain-text POST needs no CORS preflight, and tagging a stream
// kvs:max-bytes=1 deletes its data. Browsers mark such requests (Sec-Fetch-Site, Origin); SDKs and
// the CLI send neither, and the console's own requests are same-origin.
func TestCrossOriginOperationsRefused(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	e.create(t, "cam")
	post := func(hdr map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, e.ts.URL+"/tagStream",
			strings.NewReader(`{"StreamName":"cam","Tags":{"kvs:max-bytes":"1"}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get("x-amzn-ErrorType") != "AccessDeniedException" {
			t.Errorf("403 with error type %q", resp.Header.Get("x-amzn-ErrorType"))
		}
		return resp.StatusCode
	}
	tags := func() int {
		out, err := e.srv.store.GetStream(t.Context(), "cam")
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Tags)
	}
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		{"Origin": "https://evil.example"}, // an older browser: Origin only
	} {
		if code := post(hdr); code != http.StatusForbidden {
			t.Errorf("%v: status %d, want 403", hdr, code)
		}
	}
	if n := tags(); n != 0 {
		t.Fatalf("the cross-origin requests tagged the stream (%d tags)", n)
	}
	// The console (same origin) and a client that is not a browser go through.
	if code := post(map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": e.ts.URL}); code != http.StatusOK {
		t.Errorf("same-origin: status %d, want 200", code)
	}
	if code := post(nil); code != http.StatusOK {
		t.Errorf("no browser headers: status %d, want 200", code)
	}
}
