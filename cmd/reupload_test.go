package cmd

import (
	"encoding/json"
	"path/filepath"
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
