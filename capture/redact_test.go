package capture

import (
	"strings"
	"testing"
)

// The password never shows, also when it holds characters the URL escapes (it did: the escaped
// form was searched for unescaped and nothing was replaced).
func TestRedactRTSP(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"rtsp://admin:secret@cam:554/live":    "rtsp://admin:***@cam:554/live",
		"rtsp://admin:p%23ss%40w0rd@cam/live": "rtsp://admin:***@cam/live",
		"rtsps://u:xxxxx@cam/a":               "rtsps://u:***@cam/a",
		"rtsp://viewer@cam/live":              "rtsp://viewer@cam/live",
		"rtsp://cam/live":                     "rtsp://cam/live",
		"rtsp://admin:secret@/cam":            "rtsp://admin:***@/cam",
	} {
		if got := RedactRTSP(in); got != want {
			t.Errorf("RedactRTSP(%q) = %q, want %q", in, got, want)
		}
	}
}

// An URL that does not parse because its password holds a character the URL syntax reserves
// (/ ? #) is refused without a piece of the password. Before, url.Parse's reason was shown:
// "invalid port \":Zq\" after host" for rtsp://admin:Zq/9x@cam/live.
func TestCheckRTSPURLHidesPassword(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"rtsp://admin:Zq/9x@10.0.0.1/live",
		"rtsp://admin:Zq#9x@10.0.0.1/live",
		"rtsp://admin:Zq?9x@10.0.0.1/live",
		"rtsp://admin:Zq%zz9x@10.0.0.1/live",
	} {
		err := CheckRTSPURL(raw)
		if err == nil {
			t.Errorf("CheckRTSPURL(%q) = nil, want an error", raw)
			continue
		}
		if strings.Contains(err.Error(), "Zq") || strings.Contains(err.Error(), "9x") || strings.Contains(err.Error(), "%zz") {
			t.Errorf("CheckRTSPURL(%q) = %q: shows part of the password", raw, err)
		}
		if !strings.Contains(err.Error(), "percent-encoded") {
			t.Errorf("CheckRTSPURL(%q) = %q: want it to say how to write the password", raw, err)
		}
	}
}
