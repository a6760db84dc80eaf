package capture

import (
	"strings"
	"testing"
)

// TestMP4UnreadableSaysRemux: a QuickTime file the MP4 box decoder cannot read (ffmpeg's -f mov
// writes AAC in a version 1 sound description, with a wave box) is refused with an error that
// names the file and says how to send it anyway: remuxed to Matroska by ffmpeg.
func TestMP4UnreadableSaysRemux(t *testing.T) {
	t.Parallel()
	path := remuxedClip(t, "clip.mov", "-f", "mov")
	src, err := openFile(t.Context(), path, Options{})
	if err == nil {
		src.Close()
		t.Skip("the MP4 box decoder reads QuickTime sound descriptions now")
	}
	want := "ffmpeg -i " + path + " -c copy -f matroska -"
	if !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to name the file and say %q", err, want)
	}
}
