package cmd

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// put-media's "s of media" is what the server stores: the sum of ListFragments'
// FragmentLengthInMilliseconds (the audio frame that ends after the next fragment's keyframe is
// not counted twice).
func TestPutMediaSummaryMediaMatchesListFragments(t *testing.T) {
	t.Parallel()
	url, _ := e2eServer(t, nil)
	for _, clip := range []string{"h264.mkv", "h264_aac.mkv"} {
		stream := strings.TrimSuffix(clip, ".mkv")
		out := mustRun(t, url, nil, "put-media", "--stream-name", stream, "--create", "--source", testClip(clip), "--fragment-duration", "1s")
		m := regexp.MustCompile(` ([0-9.]+) s of media `).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: summary %q has no \"s of media\"", clip, out)
		}
		var list struct{ Fragments []fragmentOutput }
		if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", stream, "--output", "json")), &list); err != nil {
			t.Fatal(err)
		}
		var sum time.Duration
		for _, f := range list.Fragments {
			sum += time.Duration(f.FragmentLengthInMilliseconds) * time.Millisecond
		}
		if want := strconv.FormatFloat(sum.Seconds(), 'f', 3, 64); m[1] != want {
			t.Errorf("%s: summary says %s s of media; ListFragments' lengths add up to %s s\n%s", clip, m[1], want, out)
		}
	}
}
