package capture

import "testing"

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
