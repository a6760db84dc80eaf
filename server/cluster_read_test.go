package server

import (
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/cluster"
)

// TestClusterReadYourWritesOtherNode: a producer on node 1 is told PERSISTED; at once, with the
// upload still open, node 2 (which did not ingest) lists the fragments, serves them by number
// (GetMediaForFragmentList), in a clip (GetClip) and over HLS, the HLS session of node 2 also
// playing through node 1 (a load balancer may send a player's requests to either).
func TestClusterReadYourWritesOtherNode(t *testing.T) {
	t.Parallel()
	n1, n2, _, c, pc, first := writingCluster(t, nil)
	nums := []uint64{first}
	for i := 1; i < 3; i++ {
		nums = append(nums, pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true))
	}
	defer pc.end()

	var list struct {
		Fragments []struct{ FragmentNumber string }
	}
	n2.call(t, "/listFragments", map[string]any{"StreamName": "cam"}, &list)
	if len(list.Fragments) != len(nums) {
		t.Fatalf("ListFragments on node 2 right after PERSISTED on node 1: %+v, want %v", list.Fragments, nums)
	}
	var want []string
	for _, n := range nums {
		want = append(want, formatFragmentNumber(n))
	}
	resp := n2.post(t, t.Context(), "/getMediaForFragmentList", map[string]any{"StreamName": "cam", "Fragments": want})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GetMediaForFragmentList on node 2: %d %s", resp.StatusCode, b)
	}
	fr := mkv.NewFragmentReader(strings.NewReader(string(b)))
	var got []string
	for {
		f, err := fr.Next()
		if err != nil {
			break
		}
		got = append(got, tag(t, f, mkv.TagFragmentNumber))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("GetMediaForFragmentList on node 2: %v, want %v", got, want)
	}

	resp = n2.post(t, t.Context(), "/getClip", map[string]any{"StreamName": "cam", "ClipFragmentSelector": map[string]any{
		"FragmentSelectorType": "PRODUCER_TIMESTAMP",
		"TimestampRange":       map[string]any{"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 3600}}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Errorf("GetClip on node 2: %d %s %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}

	url, code := n2.hlsURL(t, onDemandHour("cam", "HLSFragmentSelector"))
	if code != "" {
		t.Fatal(code)
	}
	for _, u := range []string{url, strings.Replace(url, n2.ts.URL, n1.ts.URL, 1)} {
		_, media := mediaPlaylist(t, u)
		if n := strings.Count(media, "#EXTINF:"); n != len(nums) {
			t.Errorf("HLS media playlist of %s: %d segments, want %d:\n%s", u, n, len(nums), media)
		}
		seg := regexpSegment.FindString(media)
		if seg == "" {
			t.Fatalf("no segment in\n%s", media)
		}
		code, _, body := httpGet(t, u[:strings.LastIndex(u, "/")+1]+seg)
		if code != 200 || len(body) == 0 {
			t.Errorf("HLS segment %s: %d %.200s", seg, code, body)
		}
	}
	// LIVE on node 2 while node 1 still ingests.
	url, code = n2.hlsURL(t, map[string]any{"StreamName": "cam"})
	if code != "" {
		t.Fatal(code)
	}
	if _, media := mediaPlaylist(t, url); strings.Count(media, "#EXTINF:") != len(nums) {
		t.Errorf("LIVE HLS on node 2: want %d segments:\n%s", len(nums), media)
	}
}

var regexpSegment = regexp.MustCompile(`(?m)^getMP4MediaFragment\.mp4\?\S+$`)

// TestClusterRecreatedWhileUploadOpen: node 1 writes "cam" for an upload still open; on node 2
// the stream is deleted and created again. A producer that then uploads to the new stream
// through node 1 is stored there, not refused as if the stream were gone; the old stream's upload
// is not: it ends with ERROR 4008, its fragments kept out of the new stream.
func TestClusterRecreatedWhileUploadOpen(t *testing.T) {
	t.Parallel()
	n1, n2, arn, c, old, _ := writingCluster(t, func(c *cluster.Config) { c.LeaseTTL = 30 * time.Second })

	n2.deleteStream(t, arn)
	n2.createStream(t, "cam", 1)
	pc := n1.startPut(t, "cam")
	if pc.status != 200 {
		t.Fatalf("put media to the new stream: %d %s", pc.status, pc.errTyp)
	}
	pc.write(c.header())
	pc.write(c.cluster(t, 1, baseMillis))
	pc.expect(ackBuffering, 0)
	pc.expect(ackReceived, 0)
	if ev, _ := pc.next(); ev.EventType != ackPersisted {
		t.Fatalf("upload to the stream created again on node 2: %+v, want PERSISTED", ev)
	}
	// The deleted stream's upload, still open on node 1, does not go on into the new stream.
	old.write(c.cluster(t, 2, baseMillis))
	for ev, ok := old.next(); ok && ev.EventType != ackError; ev, ok = old.next() {
		if ev.EventType == ackPersisted {
			t.Errorf("the deleted stream's upload went on into the new stream: %+v", ev)
			break
		}
	}
	pc.end()
	var list struct {
		Fragments []struct{ FragmentNumber string }
	}
	n2.call(t, "/listFragments", map[string]any{"StreamName": "cam"}, &list)
	if len(list.Fragments) != 1 {
		t.Errorf("new stream lists %+v, want the new upload's one fragment", list.Fragments)
	}
	old.pw.Close()
}

// writingCluster starts two nodes and an upload to stream "cam" (retention 1 h) through node 1,
// whose first fragment is PERSISTED.
func writingCluster(t *testing.T, mod func(*cluster.Config)) (n1, n2 *mediaEnv, arn string, c *clip, pc *putConn, first uint64) {
	t.Helper()
	nodes := newCluster(t, 2, mod, nil)
	n1, n2 = nodes[0], nodes[1]
	arn = n1.createStream(t, "cam", 1)
	c = loadClip(t, "h264.mkv")
	pc = n1.startPut(t, "cam")
	pc.write(c.header())
	first = pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	return n1, n2, arn, c, pc, first
}
