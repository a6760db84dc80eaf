package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
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

// TestClusterSilentTail: node 2's live reader is fed from node 1's internal tail, and the link
// between the two goes silent without a reset (a partition, a firewall dropping the flow): no byte
// through, no close. Node 1 goes on committing, and node 2 hears of the commits. The reader on
// node 2 must go on getting every fragment once, in order, from the store. Before, the feeder
// waited on the silent tail until TCP gave up (many minutes; here for good), and the reader got
// nothing. A quiet stream (no commits) keeps its tail all the same.
func TestClusterSilentTail(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	// The producer waits for the reader between its fragments: not cut off meanwhile (its end
	// would move the lease, which ends the tail too).
	nodes := newCluster(t, 2, nil, func(c *Config) { c.PutMediaReadTimeout = 10 * time.Minute })
	n1, n2 := nodes[0], nodes[1]
	// Node 2's requests to other nodes (its tails) go through a link that can go silent.
	linkURL, link := backends.Through(t, n1.ts.URL)
	linkAddr := strings.TrimPrefix(linkURL, "http://")
	fs := n2.srv.media.feeders
	fs.mu.Lock()
	fs.retry = 2 * time.Second // the tail is tried again soon after it was given up
	fs.mu.Unlock()
	var d net.Dialer
	fs.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, linkAddr)
	}

	n1.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := n1.startPut(t, "cam")
	defer pc.end()
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan uint64, 64)
	body := n2.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	go func() {
		defer close(got)
		fr := mkv.NewFragmentReader(body)
		for {
			f, err := fr.Next()
			if err != nil {
				return
			}
			num, _ := parseFragmentNumber(tag(t, f, mkv.TagFragmentNumber))
			got <- num
		}
	}()
	var want, have []uint64
	expect := func(what string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for len(have) < len(want) {
			select {
			case n, ok := <-got:
				if !ok {
					t.Fatalf("%s: the live reader on node 2 ended after %v, want %v", what, have, want)
				}
				have = append(have, n)
			case <-deadline:
				t.Fatalf("%s: the live reader on node 2 got %v within 60 s, want %v", what, have, want)
			}
		}
		if !slices.Equal(have, want) {
			t.Fatalf("%s: the live reader on node 2 got %v, want %v", what, have, want)
		}
	}
	i := 1
	upload := func(n int) {
		for range n {
			want = append(want, pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true))
			i++
		}
	}

	upload(2)
	expect("before the link goes silent")
	// The tail is open (node 1 serves it) before the link goes silent.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if tailing(n2, "cam") != "" && counted(n1.srv.metrics.tailsServed) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 2 reads no tail from node 1")
		}
	}
	// A quiet stream keeps its tail, however long nothing comes.
	opened := counted(n2.srv.metrics.tailsOpened)
	time.Sleep(feederStall + 2*feederPoll)
	if n := counted(n2.srv.metrics.tailsOpened); n != opened || tailing(n2, "cam") == "" {
		t.Fatalf("node 2's tail of a quiet stream ended: %v tails opened, was %v", n, opened)
	}
	link.Freeze(t)
	upload(4)
	expect("with the link silent")
	upload(2)
	expect("with the link still silent")
	link.Thaw(t)
	upload(2)
	expect("after the link is back")
	// The feeder reads the tail again: it sends the fragments uploaded from now on.
	from := want[len(want)-1]
	for deadline := time.Now().Add(60 * time.Second); tailSent(n2, "cam") <= from; {
		if time.Now().After(deadline) {
			t.Fatalf("node 2's feeder does not read node 1's tail again after the link is back (it sent up to %d, want past %d)", tailSent(n2, "cam"), from)
		}
		upload(1)
		expect("after the link is back")
		time.Sleep(200 * time.Millisecond)
	}
}

// tailing returns the node whose tail e's feeder of stream reads now ("" none).
func tailing(e *mediaEnv, stream string) string {
	var url string
	withFeeder(e, stream, func(f *feeder) { url = f.tailing })
	return url
}

// tailSent returns the newest number the tail e's feeder of stream reads now sent it (0 none).
func tailSent(e *mediaEnv, stream string) uint64 {
	var n uint64
	withFeeder(e, stream, func(f *feeder) {
		if f.stopTail != nil {
			n = f.tailLast
		}
	})
	return n
}

func withFeeder(e *mediaEnv, stream string, do func(*feeder)) {
	fs := e.srv.media.feeders
	fs.mu.Lock()
	f := fs.byStream[stream]
	fs.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		do(f)
	}
}

func counted(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
