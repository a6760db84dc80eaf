package cmd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// get-fragments holds the batches it fetched until they are written in order. With a time range
// ListFragments gives every fragment's size and batches keep to batchBytes, what is held to
// windowBytes; with --fragment-numbers the sizes were unknown and batches of up to maxBatch
// fragments, 2 × --parallel of them, were held whatever the fragments weighed: 64 fragments of
// 3 MiB with --parallel 8 held 190 MiB (4K fragments of 25 MB, --parallel 64: GBs). What is held
// is measured as the bytes of answers read less the bytes written out.
//
// Not parallel: testAnswerRead is the package's.
func TestGetFragmentsGivenNumbersBoundedMemory(t *testing.T) {
	const frags, size, parallel = 64, 3 << 20, "8"
	// windowBytes, or --parallel batches of one fragment when a fragment is bigger than a batch
	// (8 × 3 MiB here), and one more batch on its way in.
	const bound = windowBytes + 2*size
	url, st := e2eServer(t, nil)
	storeFragments(t, st, "big", frags, size)
	numbers := mustRun(t, url, nil, "list-fragments", "--stream-name", "big", "--output", "numbers")
	if n := len(strings.Fields(numbers)); n != frags {
		t.Fatalf("%d fragments stored, want %d", n, frags)
	}
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"time range (sizes known), mkv", "", []string{"--format", "mkv"}},
		{"numbers, mkv", numbers, []string{"--fragment-numbers", "-", "--format", "mkv"}},
		{"numbers, raw", numbers, []string{"--fragment-numbers", "-", "--format", "raw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var read, peak atomic.Int64
			out := &countingWriter{}
			testAnswerRead = func(n int) {
				held := read.Add(int64(n)) - out.n.Load()
				for p := peak.Load(); held > p && !peak.CompareAndSwap(p, held); p = peak.Load() {
				}
			}
			t.Cleanup(func() { testAnswerRead = nil })
			var errb bytes.Buffer
			env := &Env{Stdin: strings.NewReader(tc.stdin), Stdout: out, Stderr: &errb, Getenv: func(string) string { return "" },
				Log: slog.New(slog.NewTextHandler(&errb, nil))}
			args := append([]string{"--endpoint", url, "get-fragments", "--stream-name", "big", "--parallel", parallel}, tc.args...)
			if code := Run(t.Context(), env, args); code != ExitOK {
				t.Fatalf("get-fragments: exit %d: %s", code, errb.String())
			}
			if got := out.n.Load(); got < frags*size {
				t.Fatalf("%d bytes written, want at least %d", got, frags*size)
			}
			t.Logf("held at most %.1f MiB of %d MiB", float64(peak.Load())/(1<<20), frags*size>>20)
			if peak.Load() > bound {
				t.Errorf("held %.1f MiB of answers not yet written: want at most %d MiB (%d fragments of %d MiB, --parallel %s)",
					float64(peak.Load())/(1<<20), bound>>20, frags, size>>20, parallel)
			}
		})
	}
}

// countingWriter counts what is written to it, and drops it.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return len(b), nil
}

// storeFragments stores n fragments of one video keyframe of size bytes each in a new stream,
// one a second up to now.
func storeFragments(t *testing.T, st store.Store, stream string, n, size int) {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateStream(ctx, store.Stream{Name: stream, RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	header := mkv.AppendEBMLHeader(nil, "matroska")
	header = mkv.AppendSegmentStart(header)
	header = mkv.AppendInfo(header, 1000000, "test")
	header = mkv.AppendTracks(header, []mkv.Track{{Number: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", Width: 3840, Height: 2160}})
	data := bytes.Repeat([]byte{0, 0, 0, 1}, size/4)
	start := time.Now().Add(-time.Duration(n) * time.Second)
	for i := range n {
		cluster, err := mkv.AppendCluster(nil, int64(i)*1000, []mkv.Frame{{Track: 1, Timecode: int64(i) * 1000, Keyframe: true, Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		num, err := st.NextNumber(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		at := start.Add(time.Duration(i) * time.Second)
		meta := store.FragmentMeta{Number: num, ServerTime: at, ProducerTime: at, Duration: time.Second}
		// The tags kvs stores before a fragment's cluster; the number as kvs formats it (server/wire.go).
		stamp := fmt.Sprintf("%d.%03d", at.Unix(), at.Nanosecond()/1e6)
		payload := mkv.AppendTags(bytes.Clone(header),
			mkv.SimpleTag{Name: mkv.TagFragmentNumber, Value: fmt.Sprintf("91343852333%036d", num)},
			mkv.SimpleTag{Name: mkv.TagServerTimestamp, Value: stamp},
			mkv.SimpleTag{Name: mkv.TagProducerTimestamp, Value: stamp})
		if err := store.Append(ctx, st, stream, meta, append(payload, cluster...)); err != nil {
			t.Fatal(err)
		}
	}
}
