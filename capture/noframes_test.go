package capture

import (
	"errors"
	"testing"
)

// TestFragmenterNoFrames: an input that ends after its header, with tracks but not one frame (what
// ffmpeg -f matroska - writes into a pipe before it fails, as it does for raw H.264 with B-frames:
// "Can't write packet with unknown timestamp"), is ErrNoFrames, not an empty upload that put-media
// reported as 0 fragments with exit status 0.
func TestFragmenterNoFrames(t *testing.T) {
	t.Parallel()
	path := remuxedClip(t, "noframes.mkv", "-frames:v", "0", "-frames:a", "0")
	src, err := openFile(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if n := len(src.Tracks()); n != 2 {
		t.Fatalf("%d tracks, want the clip's 2", n)
	}
	fr, err := NewFragmenter(src, FragmenterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if frag, err := fr.Next(t.Context()); !errors.Is(err, ErrNoFrames) {
		t.Fatalf("Next: %v, %v; want ErrNoFrames", frag, err)
	}
}
