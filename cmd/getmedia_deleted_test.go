package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stream deleted while get-media follows it ends get-media with exit 3 and a message that says
// the stream was deleted; the file keeps what was read, and get-media does not tell the user to
// run it again to get the rest (there is no rest: the stream is gone).
func TestGetMediaStreamDeleted(t *testing.T) {
	t.Parallel()
	subscribed := make(chan struct{})
	url, _ := e2eServer(t, getMediaSubscribed(subscribed))
	mustRun(t, url, nil, "put-media", "--stream-name", "gone", "--source", testClip("h264.mkv"), "--create", "--fragment-duration", "1s")
	out := filepath.Join(t.TempDir(), "gone.mkv")
	type result struct {
		code int
		errs string
	}
	done := make(chan result, 1)
	go func() {
		code, _, errs := kvsRun(t.Context(), t, url, nil, "get-media", "--stream-name", "gone", "--start-selector", "EARLIEST", "-o", out)
		done <- result{code, errs}
	}()
	<-subscribed
	mustRun(t, url, nil, "delete-stream", "--stream-name", "gone")
	res := <-done
	if res.code != ExitNotFound {
		t.Fatalf("get-media of a stream deleted under it: exit %d, want %d\n%s", res.code, ExitNotFound, res.errs)
	}
	if !strings.Contains(res.errs, "the stream was deleted") || strings.Contains(res.errs, "fragment was not found") {
		t.Errorf("stderr does not say the stream was deleted:\n%s", res.errs)
	}
	if strings.Contains(res.errs, "run the command again") {
		t.Errorf("stderr tells to run get-media again on a deleted stream:\n%s", res.errs)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Errorf("the file does not keep what was read: %v", err)
	}
}
