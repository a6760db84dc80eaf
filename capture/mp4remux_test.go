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

// TestMP4MP3TrackNotice: an MP4's MP3 audio (mp4a with object type 0x6b, which has no decoder
// specific info) is skipped with a notice that says it is MP3 and how to keep the audio, not that
// it is an mp4a "without an AudioSpecificConfig", which reads as a damaged AAC track.
func TestMP4MP3TrackNotice(t *testing.T) {
	t.Parallel()
	path := remuxedClip(t, "mp3.mp4", "-c:a", "libmp3lame")
	var notices []string
	src, err := openFile(t.Context(), path, Options{Notice: func(msg string) { notices = append(notices, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if n := len(src.Tracks()); n != 1 {
		t.Errorf("%d tracks, want the video only", n)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "MP3") || !strings.Contains(notices[0], "-c:a aac") {
		t.Errorf("notices %q, want one that names MP3 and says how to re-encode the audio to AAC", notices)
	}
}
