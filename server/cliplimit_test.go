package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/server/store"
)

// GetClip's clip holds at most the first 200 fragments or the first 100 MB of the range, from
// its start (the API reference's GetClipOutput.Payload), and only those are checked before the
// 200: a range of 250 fragments answers a clip of the first 200, and a tracks change at the
// 230th is no error (it is not in the clip); with the byte cap lowered to ten and a half
// fragments, the clip holds the first ten. Before, kvs sent all 250 and answered
// UnsupportedStreamMediaTypeException for the change past the cap, after reading the tracks of
// every fragment in the range.
func TestGetClipLimits(t *testing.T) {
	t.Parallel()
	testutil.Slow(t) // drives ffprobe
	h264, h265, c := fragmentBytes(t, "h264.mkv"), fragmentBytes(t, "h265.mkv"), loadClip(t, "h264.mkv")
	base := time.UnixMilli(baseMillis).Add(-24 * time.Hour)
	const n, step = 250, 10 * time.Second
	// clip starts a server whose clips hold at most maxBytes, stores n fragments in a stream
	// (the 230th of other tracks), and returns the clip of them all and its count of fragments.
	clip := func(t *testing.T, maxBytes int64) (*mediaEnv, string, int) {
		t.Helper()
		st := store.NewMem()
		srv, err := New(Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		srv.media.maxClipBytes = maxBytes
		ts := httptest.NewServer(srv)
		t.Cleanup(func() { ts.Close(); srv.Close(); st.Close() })
		e := &mediaEnv{srv: srv, ts: ts, store: st}
		e.createStream(t, "long", 24)
		for i := range n {
			data := h264
			if i == 230 {
				data = h265
			}
			appendMany(t, st, "long", 1, func(int) (time.Time, time.Duration) { return base.Add(time.Duration(i) * step), time.Second }, data)
		}
		resp := e.post(t, t.Context(), "/getClip", map[string]any{"StreamName": "long", "ClipFragmentSelector": map[string]any{
			"FragmentSelectorType": "PRODUCER_TIMESTAMP",
			"TimestampRange":       map[string]any{"StartTimestamp": base.Unix(), "EndTimestamp": base.Add(n * step).Unix()}}})
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GetClip of %d fragments: %d %s %s", n, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b)
		}
		out := filepath.Join(t.TempDir(), "clip.mp4")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return e, out, countBoxes(t, b, "moof")
	}
	frames := len(c.frags[0])

	t.Run("200 fragments", func(t *testing.T) {
		t.Parallel()
		e, out, moofs := clip(t, MaxClipBytes)
		if moofs != 200 {
			t.Errorf("clip of a range of %d fragments holds %d, want the first 200", n, moofs)
		}
		if got := ffprobeStreams(t, out); len(got) != 1 || got[0].NbReadFrames != fmt.Sprint(200*frames) {
			t.Errorf("ffprobe: %+v, want one stream of %d frames", got, 200*frames)
		}
		// The AWS CLI writes the same clip to its outfile.
		cliOut := filepath.Join(t.TempDir(), "cli.mp4")
		sel := fmt.Sprintf(`{"FragmentSelectorType":"PRODUCER_TIMESTAMP","TimestampRange":{"StartTimestamp":%d,"EndTimestamp":%d}}`,
			base.Unix(), base.Add(n*step).Unix())
		testutil.NewAWSCLI(t, e.ts.URL).OK(nil, "kinesis-video-archived-media", "get-clip", "--stream-name", "long",
			"--clip-fragment-selector", sel, cliOut)
		b, err := os.ReadFile(cliOut)
		if err != nil {
			t.Fatal(err)
		}
		if got := countBoxes(t, b, "moof"); got != 200 {
			t.Errorf("aws get-clip: %d fragments, want 200", got)
		}
	})
	t.Run("100 MB", func(t *testing.T) {
		t.Parallel()
		_, out, moofs := clip(t, 10*int64(len(h264))+int64(len(h264))/2)
		if moofs != 10 {
			t.Errorf("clip with a byte cap of 10.5 fragments holds %d fragments, want 10", moofs)
		}
		if got := ffprobeStreams(t, out); len(got) != 1 || got[0].NbReadFrames != fmt.Sprint(10*frames) {
			t.Errorf("ffprobe: %+v, want one stream of %d frames", got, 10*frames)
		}
	})
}

// fragmentBytes returns the stored bytes of the first fragment of testdata clip name, put
// through a server of its own.
func fragmentBytes(t *testing.T, name string) []byte {
	t.Helper()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "src", 24)
	uploadClip(t, e, "src", name, 0)
	ctx := t.Context()
	f, err := e.store.First(ctx, "src")
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := e.store.Open(ctx, "src", f.Number)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countBoxes counts the top-level MP4 boxes of type typ in b.
func countBoxes(t *testing.T, b []byte, typ string) int {
	t.Helper()
	n := 0
	for len(b) >= 8 {
		size := uint64(binary.BigEndian.Uint32(b))
		if size == 1 && len(b) >= 16 {
			size = binary.BigEndian.Uint64(b[8:])
		}
		if size < 8 || size > uint64(len(b)) {
			t.Fatalf("bad box size %d with %d bytes left", size, len(b))
		}
		if string(b[4:8]) == typ {
			n++
		}
		b = b[size:]
	}
	return n
}
