package capture_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/internal/testcam"
	"github.com/openkvs/kvs/internal/testutil"
)

// A camera whose encoder cuts each picture into slices (most IP cameras do) loses a packet of
// its second keyframe, as over UDP: the slices that came still hold an IDR. That picture is
// damaged, and every frame of its GOP refers to it: it must not come out as a keyframe (which
// would start a fragment that no decoder shows whole). It and the frames up to the next whole
// keyframe are dropped, and a notice says so. Before, it came out as a keyframe.
func TestRTSPKeyframeWithLostPacket(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	clip := filepath.Join(t.TempDir(), "slices.mkv")
	out, err := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=25",
		"-t", "4", "-c:v", "libx264", "-g", "25", "-bf", "0", "-x264-params", "slices=4", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{clip}, Loops: 1, LoseKeyframePacket: 2})
	var n notices
	src, err := capture.OpenRTSP(t.Context(), cam.URL("cam"), capture.RTSPOptions{Notice: n.add, Info: n.add,
		SenderReportWait: time.Second, Duration: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	frames, _ := readAll(t, src, cam)
	var lost, next time.Time
	for _, f := range cam.Sent("cam") {
		switch {
		case f.Lost:
			lost = f.Time
		case f.Key && !lost.IsZero() && next.IsZero():
			next = f.Time
		}
	}
	if lost.IsZero() || next.IsZero() {
		t.Fatalf("the camera lost no keyframe packet, or sent no keyframe after it: %+v", cam.Sent("cam"))
	}
	keys := 0
	for _, f := range frames {
		d := f.at.Sub(lost)
		if d > -time.Millisecond && f.at.Before(next.Add(-time.Millisecond)) {
			t.Errorf("frame at %v (keyframe %v) read, %v after the damaged keyframe and before the next whole one", f.at, f.key, d)
			break
		}
		if f.key {
			keys++
		}
	}
	if keys != 3 {
		t.Errorf("%d keyframes read, want 3 (the first, third and fourth)", keys)
	}
	if !strings.Contains(n.String(), "keyframe lost") {
		t.Errorf("notices %q, want one about the damaged keyframe", n.String())
	}
}
