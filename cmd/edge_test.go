package cmd

// End-to-end tests of the edge producer: put-media from RTSP cameras (internal/testcam), with
// and without a spool, against real kvs servers, checked with ffprobe and list-fragments.

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testcam"
	"github.com/openkvs/kvs/internal/testutil"
)

func testClip(name string) string { return filepath.Join("..", "testdata", name) }

// producerTimes lists the producer timestamps of a stream's fragments, in order.
func producerTimes(t *testing.T, endpoint, stream string) []time.Time {
	t.Helper()
	var out struct{ Fragments []fragmentOutput }
	if err := json.Unmarshal([]byte(mustRun(t, endpoint, nil, "list-fragments", "--stream-name", stream, "--output", "json")), &out); err != nil {
		t.Fatal(err)
	}
	var ts []time.Time
	for _, f := range out.Fragments {
		p, err := time.Parse(time.RFC3339Nano, f.ProducerTimestamp)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, p)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts
}

// gops cuts what a camera sent into its GOPs as put-media makes fragments of them: from each
// video keyframe to the next in send order, with the audio by its presentation time (audio sent
// after a keyframe but presented before it belongs to the GOP before), but not before the first
// GOP of its play (testcam's PlayStarts: each play's frames start at a keyframe, and put-media
// starts a fragment there).
func gops(sent []testcam.SentFrame, plays ...int) [][]testcam.SentFrame {
	var out [][]testcam.SentFrame
	var keys []time.Time
	first := 0 // the first GOP of the current play
	for i, f := range sent {
		if slices.Contains(plays, i) {
			first = len(out)
		}
		if f.Track == 1 && f.Key {
			out = append(out, nil)
			keys = append(keys, f.Time)
		}
		if len(out) == 0 {
			continue
		}
		g := len(out) - 1
		for f.Track != 1 && g > first && f.Time.Before(keys[g]) {
			g--
		}
		out[g] = append(out[g], f)
	}
	return out
}

// checkStored checks a stream made of 1 s fragments of a camera with 1 s GOPs: every fragment
// is one GOP the camera sent, whose keyframe time is about the fragment's producer timestamp
// (GOPs are 1 s apart: 300 ms either way tells them apart whatever the clock), each GOP at most
// once, in order; and ffprobe of the stream counts the frames of those GOPs. With lastCut, the
// capture was ended by --duration while the camera still sent: the last GOP stored may be only
// its first frames (from its keyframe to where the capture stopped; what the camera had sent and
// the RTSP client not yet read is not captured), so its frames count between 1 and all of them.
// The same holds for the GOP of each of drops (testcam's Drops: the frames written just before a
// drop may be lost with the connection). plays are testcam's PlayStarts (see gops). It returns
// the GOPs stored.
func checkStored(t *testing.T, endpoint, stream, video string, sent []testcam.SentFrame, drops, plays []int, lastCut bool) [][]testcam.SentFrame {
	t.Helper()
	all := gops(sent, plays...)
	times := producerTimes(t, endpoint, stream)
	var stored [][]testcam.SentFrame
	next := 0
	for i, ts := range times {
		j := slices.IndexFunc(all[next:], func(g []testcam.SentFrame) bool {
			d := g[0].Time.Sub(ts)
			return d > -300*time.Millisecond && d < 300*time.Millisecond
		})
		if j < 0 {
			t.Fatalf("fragment %d at %s: no GOP of the camera starts there (or it is stored twice, or out of order)", i, ts.Format(time.RFC3339Nano))
		}
		stored = append(stored, all[next+j])
		next += j + 1
	}
	count := func(gs [][]testcam.SentFrame) map[string]int {
		n := map[string]int{}
		for _, g := range gs {
			for _, f := range g {
				if f.Track == 1 {
					n["video:"+video]++
				} else {
					n["audio:aac"]++
				}
			}
		}
		return n
	}
	want := count(stored)
	got := filepath.Join(t.TempDir(), stream+".mkv")
	mustRun(t, endpoint, nil, "get-media", "--stream-name", stream, "--start-selector", "EARLIEST", "--no-follow", "-o", got)
	p := ffprobe(t, got)
	cut := map[int]bool{} // stored GOPs that may be short
	if lastCut && len(stored) > 0 {
		cut[len(stored)-1] = true
	}
	for _, d := range drops {
		for i, g := range stored {
			if d > 0 && slices.Contains(g, sent[d-1]) {
				cut[i] = true
			}
		}
	}
	if len(cut) == 0 {
		if fmt.Sprint(p.Frames) != fmt.Sprint(want) {
			t.Errorf("ffprobe of get-media: frames %v, the camera sent %v in the %d GOPs stored", p.Frames, want, len(stored))
		}
		return stored
	}
	// Video, GOP by GOP: only a GOP that may be short is, and by frames at its end. (Audio has
	// no such marks: its total only.)
	if len(p.VideoGOPs) != len(stored) {
		t.Errorf("ffprobe of get-media: %d video GOPs, want the %d stored", len(p.VideoGOPs), len(stored))
	}
	var whole [][]testcam.SentFrame
	for i, g := range stored {
		if !cut[i] {
			whole = append(whole, g)
		}
		if i >= len(p.VideoGOPs) {
			continue
		}
		sentVideo := count([][]testcam.SentFrame{g})["video:"+video]
		if got := p.VideoGOPs[i]; got > sentVideo || got < sentVideo && !cut[i] {
			t.Errorf("ffprobe of get-media: GOP %d has %d video frames, the camera sent %d (short allowed: %v)", i, got, sentVideo, cut[i])
		}
	}
	least := count(whole)
	least["video:"+video] += len(cut) // each short GOP's keyframe at least
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if p.Frames[k] < least[k] || p.Frames[k] > want[k] {
			t.Errorf("ffprobe of get-media: %d %s frames, want %d to %d (the camera's %d GOPs stored, %d maybe cut short by --duration or a drop)",
				p.Frames[k], k, least[k], want[k], len(stored), len(cut))
		}
	}
	if len(p.Frames) != len(want) {
		t.Errorf("ffprobe of get-media: streams %v, want %v", p.Frames, want)
	}
	return stored
}

// TestE2ERTSP puts two cameras into a server: H.264 + AAC with sender reports (the producer
// timestamps must be the camera's NTP times, not this machine's), and H.265 without (receive
// clock); every frame the camera sent arrives.
func TestE2ERTSP(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	cameraClock := time.Now().Add(-2 * time.Minute).Truncate(time.Millisecond)
	for _, tc := range []struct {
		name  string
		video string
		path  testcam.PathConfig
		drop  bool // the camera drops its reader after 1.5 s
	}{
		// 4 s of each camera: put-media's --duration leaves 3 s more for the reconnect and a
		// loaded machine, so that every frame the camera sent is captured.
		{"h264 aac", "h264", testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}, Loops: 1, SenderReports: true, Clock: cameraClock}, false},
		{"h265", "hevc", testcam.PathConfig{Clips: []string{testClip("h265.mkv")}, Loops: 2, InBandParams: true}, false},
		{"h264 aac camera drops", "h264", testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}, Loops: 1, SenderReports: true, Clock: cameraClock}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cam := testcam.StartTest(t, testcam.Config{}, tc.path)
			url, _ := e2eServer(t, nil)
			stream := strings.ReplaceAll(tc.name, " ", "-")
			if tc.drop {
				time.AfterFunc(1500*time.Millisecond, func() { cam.Drop("cam") })
			}
			out := mustRun(t, url, nil, "put-media", "--stream-name", stream, "--create", "--source", cam.URL("cam"),
				"--duration", "7s", "--fragment-duration", "1s")
			<-cam.Done("cam")
			stored := checkStored(t, url, stream, tc.video, cam.Sent("cam"), cam.Drops("cam"), cam.PlayStarts("cam"), false)
			if len(stored) != len(gops(cam.Sent("cam"))) {
				t.Errorf("%d GOPs stored of the %d the camera sent", len(stored), len(gops(cam.Sent("cam"))))
			}
			if !strings.Contains(out, fmt.Sprintf("%d PERSISTED, 0 failed", len(stored))) {
				t.Errorf("summary %q", out)
			}
			if tc.drop && cam.Plays("cam") != 2 {
				t.Errorf("%d PLAYs: want put-media to reconnect once after the drop", cam.Plays("cam"))
			}
			// With sender reports, each producer timestamp is the camera's time of the earliest
			// frame of its GOP: its keyframe's, or for the first the audio presented before it.
			for i, ts := range producerTimes(t, url, stream) {
				if !tc.path.SenderReports {
					break
				}
				first := stored[i][0].Time
				for _, f := range stored[i] {
					first = minTime(first, f.Time)
				}
				if !ts.Equal(first.Round(time.Millisecond)) {
					t.Errorf("fragment %d: producer timestamp %v, want the camera's %v", i, ts, first)
				}
			}
		})
	}
}

// A camera that cannot be used fails put-media within seconds, naming the camera (host:port)
// and saying why; the password never shows.
func TestPutMediaRTSPErrors(t *testing.T) {
	t.Parallel()
	cam := testcam.StartTest(t, testcam.Config{User: "admin", Password: "secret"}, testcam.PathConfig{Clips: []string{testClip("h264.mkv")}})
	if err := cam.AddUnsupported("mjpeg"); err != nil {
		t.Fatal(err)
	}
	url, _ := e2eServer(t, nil)
	refused := testutil.RefusedAddr(t)
	addr := cam.Addr()
	for _, tc := range []struct {
		name, source string
		code         int
		say          []string
	}{
		{"wrong password", "rtsp://admin:wrong@" + addr + "/cam", ExitError, []string{"camera " + addr + "/cam", "401 Unauthorized"}},
		{"unknown path", "rtsp://admin:secret@" + addr + "/porch", ExitError, []string{"camera " + addr + "/porch", "404 Not Found"}},
		{"nothing listening", "rtsp://" + refused + "/cam", ExitError, []string{"camera " + refused + "/cam", "connection refused"}},
		{"unsupported codec", "rtsp://admin:secret@" + addr + "/mjpeg", ExitError, []string{"no H.264 or H.265 video", "M-JPEG"}},
		{"not a URL", "rtsp://admin:secret@/cam", ExitUsage, []string{"--source rtsp://admin:***@/cam", "no camera host"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, _, stderr := kvsRun(t.Context(), t, url, nil, "put-media", "--stream-name", "cam", "--create", "--source", tc.source)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, s := range tc.say {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr %q does not say %q", stderr, s)
				}
			}
			if strings.Contains(stderr, "secret") || strings.Contains(stderr, ":wrong@") {
				t.Errorf("stderr shows the password: %s", stderr)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// edgeOutage is how long the kvs server is down in TestE2ESpoolOutage (the scenario is 30 s:
// go test ./cmd -run SpoolOutage -edge-outage 30s).
var edgeOutage = flag.Duration("edge-outage", 2*time.Second, "how long TestE2ESpoolOutage keeps the kvs server down")

// stop ends a kvs server with SIGTERM, as a service manager does, and waits for it.
func (p *kvsProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("kvs server did not stop in 20 s after SIGTERM; stderr:\n%s", p.stderr)
	}
}

// spoolBytes is the size of a spool's segment files.
func spoolBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.spool"))
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestE2ESpoolOutage: the kvs server (a process, on disk) stops while the camera keeps sending,
// and starts again on the same data directory and port. put-media with a spool exits 0 and every
// frame the camera sent is stored once, in order.
func TestE2ESpoolOutage(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	// The server's port is held (refusing connections) while it is down, so that no other test's
	// server takes it meanwhile and answers put-media in its place.
	port := testutil.HoldPort(t)
	data, spool, addr := t.TempDir(), t.TempDir(), port.Addr()
	port.Release()
	srv := startKVS(t, "--listen", addr, "--data-dir", data)
	// The camera sends whole loops of a 4 s clip, until the server is back (it goes down 2 s in,
	// after two 1 s fragments), and put-media captures 2 s more: so every GOP sent is whole and
	// must be stored (a camera still sending at --duration would have its last GOP cut short there).
	const up = 2 * time.Second
	loops := int((up + *edgeOutage + 4*time.Second - 1) / (4 * time.Second))
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}, Loops: loops, SenderReports: true})

	capture := time.Duration(loops)*4*time.Second + 2*time.Second
	done := make(chan struct{})
	var code int
	var out, stderr string
	go func() {
		defer close(done)
		code, out, stderr = kvsRun(t.Context(), t, srv.Endpoint, nil, "put-media", "--stream-name", "porch", "--create",
			"--source", cam.URL("cam"), "--duration", capture.String(), "--fragment-duration", "1s", "--spool-dir", spool)
	}()
	time.Sleep(up)
	srv.stop(t)
	port.Hold()
	down := time.Now()
	before := spoolBytes(t, spool)
	time.Sleep(*edgeOutage)
	if grown := spoolBytes(t, spool); grown <= before {
		t.Errorf("spool %d bytes after %v of outage, %d before: capture should go on into it", grown, *edgeOutage, before)
	}
	port.Release()
	srv = startKVS(t, "--listen", addr, "--data-dir", data)
	t.Logf("kvs server down for %v", time.Since(down).Round(100*time.Millisecond))
	<-done
	if code != ExitOK {
		t.Fatalf("put-media: exit %d\n%s", code, stderr)
	}
	<-cam.Done("cam")
	sent := cam.Sent("cam")
	stored := checkStored(t, srv.Endpoint, "porch", "h264", sent, cam.Drops("cam"), cam.PlayStarts("cam"), false)
	if all := gops(sent); len(stored) != len(all) {
		t.Errorf("%d GOPs stored of the %d the camera sent", len(stored), len(all))
	}
	if !strings.Contains(out, fmt.Sprintf("%d PERSISTED, 0 failed\n", len(stored))) {
		t.Errorf("summary %q", out)
	}
	if spoolBytes(t, spool) != 0 {
		t.Errorf("the spool still holds %d bytes", spoolBytes(t, spool))
	}
}

// TestE2ESpoolKill: put-media (a process) spools a camera while the endpoint is down and is
// killed with SIGKILL; the server starts, and put-media again on the same spool sends what the
// first one spooled, then its own: nothing spooled is lost, nothing is stored twice, in order.
func TestE2ESpoolKill(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	port := testutil.HoldPort(t) // refusing connections until the server starts there
	data, spool, addr := t.TempDir(), t.TempDir(), port.Addr()
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{testClip("h264_aac.mkv")}, SenderReports: true})

	pm := exec.Command(kvsBinary(t), "--endpoint", "http://"+addr, "put-media", "--stream-name", "porch", "--create",
		"--source", cam.URL("cam"), "--fragment-duration", "1s", "--spool-dir", spool)
	var pmErr lockedBuffer
	pm.Stderr = &pmErr
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for spoolBytes(t, spool) < 60_000 { // about 4 fragments
		if time.Now().After(deadline) {
			pm.Process.Kill()
			t.Fatalf("the spool did not grow; put-media stderr:\n%s", pmErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pm.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = pm.Wait()
	if !strings.Contains(pmErr.String(), "endpoint unreachable: capturing into the spool") {
		t.Errorf("put-media did not say it spools: %s", pmErr.String())
	}

	sp, err := client.OpenSpool(client.SpoolConfig{Dir: spool, Stream: "porch"})
	if err != nil {
		t.Fatal(err)
	}
	left := sp.Stats()
	sp.Close()
	if left.Recovered < 3 {
		t.Fatalf("spool after SIGKILL: %+v, want at least 3 fragments", left)
	}

	port.Release()
	srv := startKVS(t, "--listen", addr, "--data-dir", data)
	code, out, stderr := kvsRun(t.Context(), t, srv.Endpoint, nil, "put-media", "--stream-name", "porch", "--create", "--source", cam.URL("cam"),
		"--duration", "4s", "--fragment-duration", "1s", "--spool-dir", spool)
	if code != ExitOK {
		t.Fatalf("put-media: exit %d\n%s", code, stderr)
	}
	// Frames are missing from a stored GOP only at the end (lastCut below), unless the source
	// dropped some because put-media fell behind, which it would say.
	if strings.Contains(stderr, "fell behind") {
		t.Errorf("put-media dropped frames:\n%s", stderr)
	}
	if !strings.Contains(out, fmt.Sprintf("; %d from the spool of an earlier run", left.Recovered)) {
		t.Errorf("summary %q: want the %d fragments of the spool sent", out, left.Recovered)
	}
	stored := checkStored(t, srv.Endpoint, "porch", "h264", cam.Sent("cam"), cam.Drops("cam"), cam.PlayStarts("cam"), true)
	times := producerTimes(t, srv.Endpoint, "porch")
	spooled := 0
	for _, ts := range times {
		if !ts.Before(left.RecoveredFrom) && !ts.After(left.RecoveredTo) {
			spooled++
		}
	}
	if spooled != left.Recovered || !times[0].Equal(left.RecoveredFrom) {
		t.Errorf("%d fragments stored from %v to %v, the spool held %d from %v: want all of them, first",
			spooled, left.RecoveredFrom, left.RecoveredTo, left.Recovered, times[0])
	}
	if len(stored) <= left.Recovered {
		t.Errorf("%d fragments stored: want the second run's after the %d of the spool", len(stored), left.Recovered)
	}
}
