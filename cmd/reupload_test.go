package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPutMediaRawGetMediaTimestamps: re-uploading what `get-media --format raw` saved (KVS chunks
// whose cluster timecodes are absolute producer timestamps, the form the Matroska source says it
// reads) must give producer timestamps near the time of the upload (or those of the original),
// not the upload time plus the original's time since 1970.
func TestPutMediaRawGetMediaTimestamps(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "orig", "--source", "../testdata/h264.mkv", "--create", "--fragment-duration", "1s")
	raw := filepath.Join(t.TempDir(), "raw.mkv")
	mustRun(t, url, nil, "get-media", "--stream-name", "orig", "--start-selector", "EARLIEST", "--no-follow", "--format", "raw", "-o", raw)
	mustRun(t, url, nil, "put-media", "--stream-name", "copy", "--source", raw, "--create", "--fragment-duration", "1s")
	var listed struct {
		Fragments []struct{ ProducerTimestamp string }
	}
	out := mustRun(t, url, nil, "list-fragments", "--stream-name", "copy", "--start", "-1h", "--end", "+100000h")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Fragments) != 4 {
		t.Fatalf("list-fragments of the copy within an hour of now: %v: %s; want the 4 fragments of the clip", err, out)
	}
	for i, f := range listed.Fragments {
		ts, err := time.Parse(time.RFC3339Nano, f.ProducerTimestamp)
		if err != nil {
			var secs float64
			if json.Unmarshal([]byte(f.ProducerTimestamp), &secs) == nil {
				ts = time.Unix(0, int64(secs*1e9))
			}
		}
		if d := time.Since(ts); d < -time.Hour || d > time.Hour {
			t.Errorf("fragment %d of the copy: producer timestamp %s (%v from now)", i, f.ProducerTimestamp, -d)
		}
	}
}

// A raw H.264 pipe with no SPS in its first 64 KiB (joined between the keyframes of a camera's
// byte stream; here 70 KB of filler NAL units before the clip) cannot have its codec detected:
// put-media says to pass --codec, and with it the stream uploads from its first keyframe.
func TestPutMediaAnnexBCodecFlag(t *testing.T) {
	t.Parallel()
	clip, err := os.ReadFile("../testdata/h264.h264")
	if err != nil {
		t.Fatal(err)
	}
	filler := append([]byte{0, 0, 0, 1, 0x0c}, bytes.Repeat([]byte{0xff}, 70<<10)...) // NAL type 12: filler data
	in := append(append(filler, 0x80), clip...)                                       // rbsp_trailing_bits
	url, _ := e2eServer(t, nil)
	code, _, errs := kvsRun(t.Context(), t, url, bytes.NewReader(in), "put-media", "--stream-name", "cam", "--create", "--source", "-")
	if code != ExitUsage || !strings.Contains(errs, "--codec h264|h265") {
		t.Fatalf("without --codec: exit %d, stderr %q; want %d and advice to pass --codec", code, errs, ExitUsage)
	}
	mustRun(t, url, bytes.NewReader(in), "put-media", "--stream-name", "cam", "--source", "-", "--codec", "h264", "--fragment-duration", "1s")
	var listed struct {
		Fragments []struct{ FragmentNumber string }
	}
	out := mustRun(t, url, nil, "list-fragments", "--stream-name", "cam")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Fragments) != 4 {
		t.Fatalf("list-fragments: %v: %s; want the clip's 4 fragments", err, out)
	}
	if code, _, errs := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "cam", "--source", "-", "--codec", "vp8"); code != ExitUsage || !strings.Contains(errs, "want h264 or h265") {
		t.Errorf("--codec vp8: exit %d, stderr %q", code, errs)
	}
}

// An empty standard input (the program writing to the pipe failed) is said to be empty, not "not
// Matroska ... convert it first".
func TestPutMediaEmptyStdin(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	code, _, errs := kvsRun(t.Context(), t, url, strings.NewReader(""), "put-media", "--stream-name", "cam", "--create", "--source", "-")
	if code != ExitUsage || !strings.Contains(errs, "--source -: the input is empty") || !strings.Contains(errs, "pipe") {
		t.Errorf("put-media --source - with nothing on stdin: exit %d, stderr %q", code, errs)
	}
}

// get-media --no-follow of a stream with no fragment from the selector on ends at once (exit 0:
// nothing failed) but says so, as get-fragments does for an empty selection.
func TestGetMediaNothingSaysSo(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "create-stream", "--stream-name", "empty")
	code, out, errs := kvsRun(t.Context(), t, url, nil, "get-media", "--stream-name", "empty", "--start-selector", "EARLIEST", "--no-follow")
	if code != ExitOK || out != "" || !strings.Contains(errs, "no fragments") {
		t.Errorf("exit %d, %d bytes out, stderr %q; want 0, nothing, and a warning that there were no fragments", code, len(out), errs)
	}
}
