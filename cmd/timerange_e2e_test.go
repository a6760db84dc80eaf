package cmd

import (
	"strings"
	"testing"
)

// TestListFragmentsFarTimes: times the parser accepts (RFC 3339 and Unix seconds up to the end of
// year 9999, a far-off --end as "everything") must select as they read, not reach the server as
// a wrapped-around number: the AWS SDK writes a timestamp through UnixNano, which overflows
// outside 1678-2262.
func TestListFragmentsFarTimes(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	for _, r := range [][]string{
		{"--end", "3000-01-01T00:00:00Z"},
		{"--end", "253402300799"},
		{"--start", "1600-01-01T00:00:00Z"},
		{"--start", "1600-01-01T00:00:00Z", "--end", "9999-12-31T23:59:59Z"},
	} {
		args := append([]string{"list-fragments", "--stream-name", "cam", "--output", "numbers"}, r...)
		code, out, errs := kvsRun(t.Context(), t, url, nil, args...)
		if n := len(strings.Fields(out)); code != ExitOK || n != 4 {
			t.Errorf("list-fragments %s: exit %d, %d fragments (stderr %q); want the 4 of the clip", strings.Join(r, " "), code, n, errs)
		}
	}
}
