package server

import (
	"net/http"
	"strings"
	"testing"
)

func TestConsoleServed(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	for _, tc := range []struct {
		method, path string
		code         int
		typ, body    string
	}{
		{"GET", "/", 200, "text/html", `<script src="app.js"`},
		{"GET", "/app.js", 200, "text/javascript", "new Player("},
		{"GET", "/player.js", 200, "text/javascript", "class Player"},
		{"GET", "/style.css", 200, "text/css", "--accent"},
		{"HEAD", "/", 200, "text/html", ""},
		{"GET", "/nope.js", 404, "", ""},
		{"GET", "/describeStream", 405, "application/json", "MethodNotAllowedException"}, // operations stay POST-only
		{"POST", "/", 404, "application/json", "UnknownOperationException"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, e.ts.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.typ) || !strings.Contains(b.String(), tc.body) {
			t.Errorf("%s %s: %d %s %.80q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), b.String())
		}
	}
}
