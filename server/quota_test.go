package server

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// listNumbers lists every fragment number of stream (ListFragments, one page).
func (e *mediaEnv) listNumbers(t testing.TB, stream string) []string {
	t.Helper()
	var list struct {
		Fragments []struct{ FragmentNumber string }
	}
	e.call(t, "/listFragments", map[string]any{"StreamName": stream, "MaxResults": 1000}, &list)
	var out []string
	for _, f := range list.Fragments {
		out = append(out, f.FragmentNumber)
	}
	return out
}

// TestDiskQuotaPutMedia: a 10 MB clip (40 fragments of 250 kB) put six times through PutMedia
// into a 20 MB disk quota, on a 32 MiB tmpfs (60 MB would not fit: without the quota ingest
// would fail). Every fragment is PERSISTED, the data directory never passes the quota by more
// than one fragment, the oldest fragments go and the last put's all stay, ListFragments and
// GetMedia EARLIEST start at the oldest kept fragment (as after retention), and the deletions are
// counted in /metrics.
func TestDiskQuotaPutMedia(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	dir := filepath.Join(testutil.Tmpfs(t, "32m"), "data")
	const quota = 20_000_000
	reg := prometheus.NewRegistry()
	st, err := store.OpenFS(dir, store.FSOptions{MaxDiskBytes: quota, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := newMediaEnvStore(t, st, func(c *Config) { c.Registry = reg })
	e.createStream(t, "cam", 24)

	data := make([]byte, 300_000)
	var frames []mkv.Frame
	var all []uint64
	const perPut, puts = 40, 6
	for p := range puts {
		pc := e.startPut(t, "cam")
		pc.write(benchHeader())
		for i := range perPut {
			tc := int64(baseMillis) + int64(p*perPut+i)*1000
			frames = benchFragment(frames, data, tc)
			cl, err := mkv.AppendCluster(nil, tc, frames)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, pc.fragment(cl, tc, true))
			if used := testutil.DirBytes(t, dir); used > quota+300_000 {
				t.Fatalf("put %d, fragment %d: the data directory takes %d bytes, over the %d-byte quota by more than a fragment", p, i, used, quota)
			}
		}
		pc.end()
	}

	kept := e.listNumbers(t, "cam")
	t.Logf("%d of %d fragments kept; the data directory takes %d bytes", len(kept), len(all), testutil.DirBytes(t, dir))
	if len(kept) < perPut || len(kept) >= len(all) {
		t.Fatalf("%d fragments kept of %d, want the last put's %d and fewer than all", len(kept), len(all), perPut)
	}
	newest := all[len(all)-len(kept):]
	for i, n := range newest {
		if kept[i] != formatFragmentNumber(n) {
			t.Fatalf("kept %v..., want the newest %d fragments from %d", kept[:3], len(kept), newest[0])
		}
	}
	rd := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, false)
	got := fragmentNumbers(t, readFragments(t, rd))
	rd.Close()
	if len(got) != len(kept) || got[0] != newest[0] {
		t.Errorf("GetMedia EARLIEST: %d fragments from %d, want %d from %d", len(got), got[0], len(kept), newest[0])
	}
	fams := scrape(t, e.ts.URL+"/metrics")
	if v := value(t, fams, "kvs_store_deleted_fragments_total", "reason", "disk_quota"); v != float64(len(all)-len(kept)) {
		t.Errorf("kvs_store_deleted_fragments_total{reason=disk_quota} = %v, want %d", v, len(all)-len(kept))
	}
	if v := value(t, fams, "kvs_store_disk_limit_bytes"); v != quota {
		t.Errorf("kvs_store_disk_limit_bytes = %v, want %d", v, quota)
	}
}

// TestStreamByteCap: the kvs:max-bytes tag (a kvs extension) caps what one stream keeps, through
// PutMedia, while another stream keeps everything; a value that is not a size is refused with a
// message that says what to write.
func TestStreamByteCap(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.call(t, "/createStream", map[string]any{"StreamName": "capped", "DataRetentionInHours": 24,
		"Tags": map[string]string{store.MaxBytesTag: "2MB"}}, nil)
	e.createStream(t, "free", 24)
	resp := e.post(t, t.Context(), "/tagStream", map[string]any{"StreamName": "free", "Tags": map[string]string{store.MaxBytesTag: "lots"}})
	var eb errorBody
	err := json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 400 || eb.Type != codeInvalidArgument || !strings.Contains(eb.Message, "such as 500MB") {
		t.Errorf("TagStream kvs:max-bytes=lots: %d %+v (%v), want 400 InvalidArgumentException naming the format", resp.StatusCode, eb, err)
	}
	data := make([]byte, 300_000)
	var frames []mkv.Frame
	for _, name := range []string{"capped", "free"} {
		pc := e.startPut(t, name)
		pc.write(benchHeader())
		for i := range 20 { // 5 MB
			tc := int64(baseMillis) + int64(i)*1000
			frames = benchFragment(frames, data, tc)
			cl, err := mkv.AppendCluster(nil, tc, frames)
			if err != nil {
				t.Fatal(err)
			}
			pc.fragment(cl, tc, true)
		}
		pc.end()
	}
	var list struct {
		Fragments []struct{ FragmentSizeInBytes int64 }
	}
	e.call(t, "/listFragments", map[string]any{"StreamName": "capped"}, &list)
	var sum int64
	for _, f := range list.Fragments {
		sum += f.FragmentSizeInBytes
	}
	if sum > 2_000_000 || len(list.Fragments) < 4 {
		t.Errorf("capped at 2 MB keeps %d fragments, %d bytes", len(list.Fragments), sum)
	}
	if n := len(e.listNumbers(t, "free")); n != 20 {
		t.Errorf("the stream without a cap keeps %d of 20 fragments", n)
	}
	// The fragments the cap deleted are recent enough to be in the live cache still: GetMedia
	// from the start skips them too, as after retention.
	rd := e.getMedia(t, t.Context(), "capped", map[string]any{"StartSelectorType": "EARLIEST"}, false)
	got := readFragments(t, rd)
	rd.Close()
	if len(got) != len(list.Fragments) {
		t.Errorf("GetMedia EARLIEST of the capped stream: %d fragments, ListFragments lists %d", len(got), len(list.Fragments))
	}
}
