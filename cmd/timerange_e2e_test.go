package cmd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
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

// TestListFragmentsOpenEndProducerFuture: without --end, list-fragments and get-fragments select
// "now and later". Producer timestamps may lie well past now (put-media stamps a file's frames
// from the time it started, so the second day of a recording uploads a day ahead); on producer
// timestamps those fragments must be selected too, not only those up to a day from now.
func TestListFragmentsOpenEndProducerFuture(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	// The clip with its last two seconds 25 hours later.
	gap := filepath.Join(t.TempDir(), "gap.mkv")
	if out, err := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-i", testClip("h264.mkv"), "-c", "copy",
		"-bsf:v", "setts=ts='if(gte(PTS,2000),PTS+90000000,PTS)'", gap).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", gap, "--create", "--fragment-duration", "1s")
	all := strings.Fields(mustRun(t, url, nil, "list-fragments", "--stream-name", "cam", "--output", "numbers"))
	if len(all) != 4 {
		t.Fatalf("list-fragments on server timestamps: %v, want the 4 fragments of the clip", all)
	}
	for _, r := range [][]string{nil, {"--start", "-1h"}} {
		args := append([]string{"list-fragments", "--stream-name", "cam", "--output", "numbers", "--timestamp-type", "producer"}, r...)
		if got := strings.Fields(mustRun(t, url, nil, args...)); !slices.Equal(got, all) {
			t.Errorf("list-fragments --timestamp-type producer %s: %v, want %v", strings.Join(r, " "), got, all)
		}
	}
	raw := filepath.Join(t.TempDir(), "raw.mkv")
	mustRun(t, url, nil, "get-fragments", "--stream-name", "cam", "--timestamp-type", "producer", "--format", "raw", "-o", raw)
	if data, err := os.ReadFile(raw); err != nil || bytes.Count(data, []byte(mkv.TagFragmentNumber)) != 4 {
		t.Errorf("get-fragments --timestamp-type producer: %d fragments (%v), want 4", bytes.Count(data, []byte(mkv.TagFragmentNumber)), err)
	}
}
