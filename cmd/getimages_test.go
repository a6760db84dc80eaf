package cmd

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/decode/decodetest"
	"github.com/openkvs/kvs/internal/testutil"
)

func TestGetImagesOptionsValidate(t *testing.T) {
	t.Parallel()
	ok := getImagesOptions{Stream: streamRef{Name: "cam"}, Start: "-10m", End: "now", TimestampType: "producer",
		Interval: 10 * time.Second, Format: "jpeg", Quality: 80, Dir: "out", Output: outputTable}
	cases := []struct {
		name string
		mod  func(o *getImagesOptions)
		ok   bool
	}{
		{"ok", func(*getImagesOptions) {}, true},
		{"png, json, server clock", func(o *getImagesOptions) { o.Format, o.Output, o.TimestampType = "PNG", outputJSON, "server" }, true},
		{"height alone", func(o *getImagesOptions) { o.Height = 90 }, true},
		{"both sizes", func(o *getImagesOptions) { o.Width, o.Height = 3840, 2160 }, true},
		{"200ms", func(o *getImagesOptions) { o.Interval = 200 * time.Millisecond }, true},
		{"no stream", func(o *getImagesOptions) { o.Stream = streamRef{} }, false},
		{"no start", func(o *getImagesOptions) { o.Start = "" }, false},
		{"end before start", func(o *getImagesOptions) { o.Start, o.End = "now", "-1m" }, false},
		{"bad time", func(o *getImagesOptions) { o.End = "tomorrow" }, false},
		{"bad clock", func(o *getImagesOptions) { o.TimestampType = "arrival" }, false},
		{"199ms", func(o *getImagesOptions) { o.Interval = 199 * time.Millisecond }, false},
		{"sub-millisecond", func(o *getImagesOptions) { o.Interval = time.Second + time.Microsecond }, false},
		{"gif", func(o *getImagesOptions) { o.Format = "gif" }, false},
		{"text output", func(o *getImagesOptions) { o.Output = outputText }, false}, // it has table and json only
		{"quality 0", func(o *getImagesOptions) { o.Quality = 0 }, false},
		{"quality 101", func(o *getImagesOptions) { o.Quality = 101 }, false},
		{"width alone", func(o *getImagesOptions) { o.Width = 100 }, false},
		{"too tall", func(o *getImagesOptions) { o.Height = 2161 }, false},
		{"no dir", func(o *getImagesOptions) { o.Dir = "" }, false},
		{"bad output", func(o *getImagesOptions) { o.Output = "csv" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mod(&o)
			if err := o.validate(); (err == nil) != tc.ok {
				t.Errorf("validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// imageProbe is what ffprobe reads from an image file.
type imageProbe struct {
	Codec         string
	Width, Height int
}

// probeImage reads the image file at path as ffprobe does: with ffprobe for the first file of im,
// with Go's decoders for the others (decodetest.Images says why that is enough).
func probeImage(t *testing.T, im *decodetest.Images, path string) imageProbe {
	t.Helper()
	c, w, h := im.Probe(t, path)
	return imageProbe{c, w, h}
}

// TestE2EGetImages runs `kvs server` (with its GetImages decoders: OpenH264 for H.264 in cgo
// builds, ffmpeg for H.265), puts the H.264 and H.265 clips in with put-media and gets images back
// with get-images over 6 minutes at 2 s: 181 samples in two 300 s requests, the clip's 4 s (2 s) as
// images and the rest NO_MEDIA; each file is an image of the asked size (ffprobe reads the first
// of each stream, Go's decoders the others), numbered in time order; the store is unchanged.
func TestE2EGetImages(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg and ffprobe
	testutil.NeedTool(t, "ffprobe")
	testutil.NeedTool(t, "ffmpeg")
	url, logs, _ := startServe(t, "--listen", "127.0.0.1:0", "--memory")
	for _, s := range []struct{ stream, clip string }{{"cam", "h264.mkv"}, {"hevc", "h265.mkv"}} {
		mustRun(t, url, nil, "put-media", "--stream-name", s.stream, "--source", filepath.Join("..", "testdata", s.clip),
			"--create", "--fragment-duration", "1s")
	}
	before := mustRun(t, url, nil, "list-fragments", "--stream-name", "cam", "--output", "numbers")

	for _, tc := range []struct {
		stream, format, ext, codec string
		size                       []string
		w, h, images               int
	}{
		{"cam", "jpeg", ".jpg", "mjpeg", []string{"--width-pixels", "160", "--height-pixels", "100"}, 160, 100, 2},
		{"hevc", "png", ".png", "png", []string{"--height-pixels", "60"}, 80, 60, 1},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "frames")
			// The clip's producer time starts when put-media started, a moment ago, and runs 4 s (2 s) on.
			args := append([]string{"get-images", "--stream-name", tc.stream, "--start", "-5m50s", "--end", "+10s", "--interval", "2s",
				"--format", tc.format, "-o", dir, "--output", "json"}, tc.size...)
			out := mustRun(t, url, nil, args...)
			var res struct{ Images []imageRecord }
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if len(res.Images) != 181 {
				t.Fatalf("%d samples, want 181 (6 min every 2 s)", len(res.Images))
			}
			var files []string
			var prev time.Time
			for i, r := range res.Images {
				ts, err := time.Parse(time.RFC3339, r.TimeStamp)
				if err != nil || (i > 0 && ts.Sub(prev) != 2*time.Second) {
					t.Fatalf("sample %d at %q (%v), the one before at %v: want 2 s apart", i, r.TimeStamp, err, prev)
				}
				prev = ts
				switch {
				case r.File != "":
					files = append(files, r.File)
				case r.Error != "NO_MEDIA":
					t.Errorf("sample %d: error %q", i, r.Error)
				}
			}
			if len(files) < tc.images || len(files) > tc.images+1 {
				t.Errorf("%d images, want %d or %d (the clip's length every 2 s)", len(files), tc.images, tc.images+1)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != len(files) {
				t.Fatalf("%s holds %d files (%v), want %d", dir, len(entries), err, len(files))
			}
			var im decodetest.Images
			for i, f := range files {
				if want := filepath.Join(dir, "00000"+string(rune('1'+i))+tc.ext); f != want {
					t.Errorf("file %d is %s, want %s", i, f, want)
				}
				if p := probeImage(t, &im, f); p != (imageProbe{tc.codec, tc.w, tc.h}) {
					t.Errorf("%s: %+v, want %s %dx%d", f, p, tc.codec, tc.w, tc.h)
				}
			}
		})
	}
	if after := mustRun(t, url, nil, "list-fragments", "--stream-name", "cam", "--output", "numbers"); after != before {
		t.Errorf("get-images changed the store: fragments\n%s\nthen\n%s", before, after)
	}
	// The decoders are probed while the server starts listening, and said in its log by the time
	// GetImages first decodes.
	if l := logs.String(); !strings.Contains(l, "GetImages decoders") || !strings.Contains(l, "h265=\"ffmpeg") {
		t.Errorf("kvs server's log does not say what GetImages decodes:\n%s", l)
	}
}

// TestGetImagesTable calls runGetImages directly: the table names each sample's file or error,
// and a stream that does not exist is a not-found error.
func TestGetImagesTable(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // GetImages runs ffmpeg
	testutil.NeedTool(t, "ffmpeg")
	url, _ := e2eServer(t, nil)
	mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--source", filepath.Join("..", "testdata", "h264.mkv"), "--create")
	env, out := runEnv(t, url)
	dir := t.TempDir()
	o := getImagesOptions{Stream: streamRef{Name: "cam"}, Start: "-20s", End: "+20s", TimestampType: "producer", Interval: time.Second,
		Format: "png", Quality: 80, Height: 30, Dir: dir, Output: outputTable}
	if err := runGetImages(t.Context(), env, o); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 42 || !strings.HasPrefix(lines[0], "TIMESTAMP") {
		t.Fatalf("table of %d lines, want a header and 41 samples:\n%s", len(lines), out)
	}
	var files, gaps int
	var im decodetest.Images
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[2] == "-" && strings.HasSuffix(f[1], ".png"):
			files++
			if p := probeImage(t, &im, f[1]); p != (imageProbe{"png", 40, 30}) {
				t.Errorf("%s: %+v, want a 40x30 PNG", f[1], p)
			}
		case len(f) == 3 && f[1] == "-" && f[2] == "NO_MEDIA":
			gaps++
		default:
			t.Errorf("row %q", l)
		}
	}
	if files < 4 || files > 5 || files+gaps != 41 {
		t.Errorf("%d images and %d NO_MEDIA, want 4 or 5 images (the 4 s clip) and the rest NO_MEDIA", files, gaps)
	}
	o.Stream = streamRef{Name: "missing"}
	if err := runGetImages(t.Context(), env, o); !isNotFound(err) {
		t.Errorf("missing stream: %v, want ResourceNotFoundException", err)
	}
}

// TestGetImagesRecoveryPoints: H.264 with periodic intra refresh has one IDR picture, then a
// recovery point SEI at the start of each refresh cycle, where put-media cuts its fragments. A
// picture is whole only once a cycle has refreshed it, so a fragment starting at a recovery point
// decodes from the one before; on its own it gives no picture for the first cycle's frames. Every
// sample, 200 ms apart (every frame) and 1 s apart (keyframes), must be the source frame at or
// before it.
func TestGetImagesRecoveryPoints(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // runs ffmpeg
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	for _, tc := range recoveryPointEncodings {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src := recoveryPointClip(t, ffmpeg, tc, 6)
			url, _ := e2eServer(t, nil)
			mustRun(t, url, nil, "put-media", "--stream-name", "cam", "--create", "--source", src, "--fragment-duration", "1s")
			var list struct{ Fragments []fragmentOutput }
			if err := json.Unmarshal([]byte(mustRun(t, url, nil, "list-fragments", "--stream-name", "cam", "--timestamp-type", "producer",
				"--start", "-1h", "--end", "+1h")), &list); err != nil || len(list.Fragments) != 6 {
				t.Fatalf("%d fragments (%v), want 6", len(list.Fragments), err)
			}
			var first time.Time
			for i, f := range list.Fragments {
				ts, err := time.Parse(time.RFC3339Nano, f.ProducerTimestamp)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 || ts.Before(first) {
					first = ts
				}
			}
			ref := decodetest.ReferenceFrames(t, src, 160, 120)
			for _, interval := range []time.Duration{200 * time.Millisecond, time.Second} {
				out := mustRun(t, url, nil, "get-images", "--stream-name", "cam", "--start", first.Format(time.RFC3339Nano),
					"--end", first.Add(5960*time.Millisecond).Format(time.RFC3339Nano), "--interval", interval.String(),
					"--format", "png", "-o", filepath.Join(dir, interval.String()), "--output", "json")
				var res struct{ Images []imageRecord }
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("output %q: %v", out, err)
				}
				if want := int(5960*time.Millisecond/interval) + 1; len(res.Images) != want {
					t.Fatalf("every %v: %d samples, want %d", interval, len(res.Images), want)
				}
				for i, r := range res.Images {
					off := time.Duration(i) * interval
					want := int(off / (40 * time.Millisecond)) // every frame
					if interval >= time.Second {
						want = 25 * int(off/time.Second) // keyframes
					}
					if r.File == "" {
						t.Errorf("every %v: sample %d (+%v): %q, want source frame %d", interval, i, off, r.Error, want)
						continue
					}
					f, err := os.Open(r.File)
					if err != nil {
						t.Fatal(err)
					}
					pic, err := png.Decode(f)
					f.Close()
					if err != nil {
						t.Fatal(err)
					}
					if got := decodetest.Closest(pic, ref); got != want {
						t.Errorf("every %v: sample %d (+%v) shows source frame %d, want %d", interval, i, off, got, want)
					}
				}
			}
		})
	}
}
