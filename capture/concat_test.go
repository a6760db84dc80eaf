package capture

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// concatFragments cuts input, opened as stdin, into fragments of about 1 s and checks each as it
// comes (the Fragmenter lends frame data until its next Next): it starts with a keyframe later
// than the previous fragment's last frame, and it can be written. It returns the frames read and
// the size of the last fragment's video track and the timecode of the latest frame (ms).
func concatFragments(t *testing.T, input []byte) (frames int, width, height uint32, last int64) {
	t.Helper()
	src, err := Open(t.Context(), bytes.NewReader(input), "-", Options{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := NewFragmenter(src, FragmenterConfig{TargetDuration: 1e9})
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	last = -1
	for i := 0; ; i++ {
		f, err := fr.Next(t.Context())
		if errors.Is(err, io.EOF) {
			return frames, width, height, last
		}
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if first := f.Frames[0]; !first.Keyframe || first.Timecode <= last {
			t.Fatalf("fragment %d starts with a frame at %d ms (keyframe %v), not a keyframe after the previous fragment's last frame at %d ms",
				i, first.Timecode, first.Keyframe, last)
		}
		for _, fm := range f.Frames {
			last = max(last, fm.Timecode)
		}
		if _, err := mkv.AppendFragment(nil, f); err != nil {
			t.Fatalf("fragment %d cannot be written: %v", i, err)
		}
		frames += len(f.Frames)
		tr := f.Tracks[0]
		ps, err := codec.ParseConfig(codec.H264, tr.CodecPrivate)
		if err != nil {
			t.Fatalf("fragment %d: CodecPrivate: %v", i, err)
		}
		if info, err := codec.ParseSPS(codec.H264, ps.SPS[0]); err != nil || uint32(info.Width) != tr.Width || uint32(info.Height) != tr.Height {
			t.Fatalf("fragment %d: track %dx%d, its avcC's SPS %+v (%v)", i, tr.Width, tr.Height, info, err)
		}
		width, height = tr.Width, tr.Height
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testdata(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Matroska files concatenated (`cat a.mkv b.mkv | kvs put-media --source -`), each starting at 0:
// the second goes on after the first (as mkvmerge appends), instead of frames going back in time
// and fragments that cannot be written; where the second one's picture size differs (a camera
// reconfigured; GetMedia output across that change), its fragments carry its own track and avcC.
func TestMKVConcatenated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		files         []string
		frames        int
		width, height uint32
		lastMillis    int64 // the last frame's timecode: the files' durations in a row, less a frame
	}{
		{"timestamps start again", []string{"h264.mkv", "h264.mkv"}, 200, 320, 240, 7960},
		{"picture size changes", []string{"h264_160x120.mkv", "h264_2s.mkv"}, 100, 320, 240, 3960},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var in []byte
			for _, f := range tc.files {
				in = append(in, readTestdata(t, f)...)
			}
			frames, w, h, last := concatFragments(t, in)
			if frames != tc.frames || w != tc.width || h != tc.height || last < tc.lastMillis-40 || last > tc.lastMillis+40 {
				t.Errorf("%d frames, the last fragment %dx%d, the last frame at %d ms; want %d, %dx%d, about %d ms",
					frames, w, h, last, tc.frames, tc.width, tc.height, tc.lastMillis)
			}
		})
	}
}

// A raw H.264 stream whose in-band SPS changes the picture size (160x120, then 320x240 from a
// later IDR on, as a camera that is reconfigured sends it, or `cat a.h264 b.h264`): the pictures
// after the change go out under a track whose size and avcC are those of the new SPS.
func TestAnnexBResolutionChange(t *testing.T) {
	t.Parallel()
	ffmpeg := testutil.NeedTool(t, "ffmpeg")
	small := filepath.Join(t.TempDir(), "small.h264")
	cmd := exec.CommandContext(t.Context(), ffmpeg, "-v", "error", "-i", testdata("h264_160x120.mkv"), "-c:v", "copy",
		"-bsf:v", "h264_mp4toannexb", "-f", "h264", small)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	in, err := os.ReadFile(small)
	if err != nil {
		t.Fatal(err)
	}
	frames, w, h, last := concatFragments(t, append(in, readTestdata(t, "h264.h264")...))
	if frames != 150 || w != 320 || h != 240 || last != 5960 {
		t.Errorf("%d frames, the last fragment %dx%d, the last frame at %d ms; want 150, 320x240, 5960 ms", frames, w, h, last)
	}
}

// maxMP4Samples caps the samples of one MP4 file, not of each track: a 66 KB file whose two
// tracks each claim 10 million samples (a uniform stsz, one stts run and one stsc run) made
// NewMP4Source index 20 million samples (800 MB) before reading a byte of media, and more trak
// boxes any amount. Samples that cannot fit in the file are refused too.
func TestMP4SampleCapPerFile(t *testing.T) {
	t.Parallel()
	b, _ := clipBox(t, "stsz")
	const claim = maxMP4Samples
	patched := 0
	for _, typ := range []string{"stsz", "stts", "stsc"} {
		for from := 0; ; {
			i := bytes.Index(b[from:], []byte(typ))
			if i < 0 {
				break
			}
			i += from
			from = i + 4
			switch typ {
			case "stsz": // version+flags, sample_size, sample_count; the size table becomes a free box
				size := getU32(b[i-4:])
				putU32(b[i+8:], 1)
				putU32(b[i+12:], claim)
				putU32(b[i-4:], 20)
				putU32(b[i+16:], size-20)
				copy(b[i+20:], "free")
			case "stts": // version+flags, entry_count, (count, delta)...
				putU32(b[i+12:], claim)
			case "stsc": // version+flags, entry_count, (first_chunk, samples_per_chunk, sdi)...
				putU32(b[i+16:], claim)
			}
			patched++
		}
	}
	if patched != 6 {
		t.Fatalf("patched %d boxes, want 2 tracks x 3", patched)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	src, err := Open(t.Context(), bytes.NewReader(b), "claims.mp4", Options{})
	runtime.ReadMemStats(&after)
	if err == nil {
		src.Close()
		t.Errorf("a %d-byte MP4 claiming %d samples per track opened", len(b), claim)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 500<<20 {
		t.Errorf("opening a %d-byte MP4 allocated %d MB (open error: %v)", len(b), alloc>>20, err)
	}
}
