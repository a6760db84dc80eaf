package cmd

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// A stream whose tracks change (H.264 video only, then H.264 with AAC audio, then H.265: three
// uploads one after another) cannot play as one Matroska stream: ffmpeg 5.1 reads the later
// Segments with the first one's track headers, drops the frames of the new audio track and
// stops there, or feeds H.265 to the H.264 decoder. get-media and get-fragments write what they
// read but say on stderr at which fragment the tracks change and how to read from there.
func TestGetMediaTrackChangeWarns(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "create-stream", "--stream-name", "cam")
	var changes []string // the first fragment of each upload after the first
	seen := 0
	for i, clip := range []string{"h264.mkv", "h264_aac.mkv", "h265.mkv"} {
		mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", testClip(clip))
		var list struct{ Fragments []fragmentOutput }
		if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", "cam", "--output", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			changes = append(changes, list.Fragments[seen].FragmentNumber)
		}
		seen = len(list.Fragments)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"get-media", "--stream-name", "cam", "--start-selector", "EARLIEST", "--no-follow", "-o", filepath.Join(dir, "m.mkv")},
		{"get-fragments", "--stream-name", "cam", "-o", filepath.Join(dir, "f.mkv")},
	} {
		code, _, errs := kvsRun(t.Context(), t, url, nil, args...)
		if code != ExitOK {
			t.Fatalf("kvs %s: exit %d\n%s", args[0], code, errs)
		}
		for _, n := range changes {
			if !strings.Contains(errs, "fragment "+n) || !strings.Contains(errs, "--fragment-number "+n) {
				t.Errorf("kvs %s: stderr does not say that the tracks change at fragment %s and how to read from there:\n%s", args[0], n, errs)
			}
		}
	}
}
