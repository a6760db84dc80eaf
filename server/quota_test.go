package server

import (
	"encoding/json"
	"strings"
	"testing"

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
