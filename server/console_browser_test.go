package server

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// chromium runs Debian's headless Chromium on url and returns the DOM after budget of page time
// (--virtual-time-budget lets timers and media run that long), and a screenshot in artifacts.
func chromium(t *testing.T, url, shot string, budget time.Duration) string {
	t.Helper()
	bin := needTool(t, "chromium")
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
		"--autoplay-policy=no-user-gesture-required", "--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=" + strconv.Itoa(int(budget.Milliseconds()))}
	ctx, cancel := context.WithTimeout(t.Context(), budget+60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(common, "--dump-dom", url)...)
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v\n%s", err, stderr.String())
	}
	if shot != "" {
		cmd = exec.CommandContext(ctx, bin, append(common, "--window-size=1280,900", "--screenshot="+shot, url)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("chromium --screenshot: %v\n%s", err, out)
		}
	}
	return string(dom)
}

// artifactDir keeps screenshots: $KVS_ARTIFACTS when set (CI uploads it), else the test's
// temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("KVS_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

var statPattern = func(id string) *regexp.Regexp {
	return regexp.MustCompile(`id="` + id + `"[^>]*>([^<]*)<`)
}

func stat(dom, id string) string {
	m := statPattern(id).FindStringSubmatch(dom)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestConsoleBrowser loads the console in real headless Chromium while a producer sends: the
// stream list shows the stream, and the stream page's live player decodes frames of the right
// size from the live HLS session's fMP4. Screenshots of both pages go to $KVS_ARTIFACTS.
func TestConsoleBrowser(t *testing.T) {
	needTool(t, "chromium")
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	base := time.Now().Add(-2 * time.Second).UnixMilli()
	for i := range 2 {
		pc.fragment(c.cluster(t, i, base), c.fragTimecode(i, base), true)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { // a live producer: one 1 s fragment a second
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for n := 2; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				b, err := c.appendCluster(nil, n, base)
				if err != nil {
					return
				}
				if _, err := pc.pw.Write(b); err != nil {
					return
				}
			}
		}
	}()
	defer func() { cancel(); <-done }()

	dir := artifactDir(t)
	list := chromium(t, e.ts.URL+"/", filepath.Join(dir, "console-streams.png"), 3*time.Second)
	if !regexp.MustCompile(`data-stream="cam"`).MatchString(list) {
		t.Errorf("stream list has no row for cam:\n%s", list)
	}
	page := chromium(t, e.ts.URL+"/#/stream/cam", filepath.Join(dir, "console-stream.png"), 8*time.Second)
	frames, _ := strconv.Atoi(stat(page, "st-frames"))
	t.Logf("player: state %q, position %q, behind %q, frames %q, size %q; screenshots in %s",
		stat(page, "st-state"), stat(page, "st-time"), stat(page, "st-latency"), stat(page, "st-frames"), stat(page, "st-size"), dir)
	// --virtual-time-budget runs timers but not media playback in step with them, so what can be
	// checked this way is that MSE accepted the init segment and fragments and decoded frames of
	// the right size; watching currentTime advance needs a DevTools client (chromedp).
	if frames < 1 {
		t.Errorf("decoded frames %q, want some", stat(page, "st-frames"))
	}
	if got := stat(page, "st-size"); got != "320x240" {
		t.Errorf("video size %q, want 320x240", got)
	}
}
