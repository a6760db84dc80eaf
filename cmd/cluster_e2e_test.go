package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
	"github.com/openkvs/kvs/mkv"
)

// clusterNodes starts n `kvs server` processes in cluster mode on the PostgreSQL schema pg (from
// backends.Postgres, maybe through a backends.Link) and a fresh S3 bucket, with a short lease so
// that failover tests are quick.
func clusterNodes(t *testing.T, n int, pg string) []*kvsProcess {
	t.Helper()
	b := backends.S3(t)
	var nodes []*kvsProcess
	for range n {
		nodes = append(nodes, startKVSEnv(t, b.Env(), "--index", pg, "--objects", b.URL(),
			"--lease-ttl", "3s", "--flush-interval", "100ms", "--log-level", "debug"))
	}
	return nodes
}

// writerOf asks node who writes stream (POST /kvs/describeCluster): its URL, "" for nobody.
func writerOf(t *testing.T, node, stream string) string {
	t.Helper()
	resp, err := http.Post(node+"/kvs/describeCluster", "application/json", strings.NewReader("{}"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var d struct {
		Nodes []struct {
			URL     string `json:"Url"`
			Streams []string
		}
	}
	if json.NewDecoder(resp.Body).Decode(&d) != nil {
		return ""
	}
	for _, n := range d.Nodes {
		if slices.Contains(n.Streams, stream) {
			return n.URL
		}
	}
	return ""
}

// liveReader is `kvs get-media --start-selector NOW --format raw` on one node, run in the test
// process until stop.
type liveReader struct {
	file string
	stop context.CancelFunc
	done chan struct{}
	code int
	err  string
}

func startReader(t *testing.T, node, stream string) *liveReader {
	t.Helper()
	r := &liveReader{file: filepath.Join(t.TempDir(), "live.raw"), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	r.stop = cancel
	go func() {
		defer close(r.done)
		r.code, _, r.err = kvsRun(ctx, t, node, nil, "get-media", "--stream-name", stream, "--start-selector", "NOW",
			"--format", "raw", "-o", r.file)
	}()
	return r
}

// numbers reads the fragment numbers of a raw GetMedia file, in order, and their frame counts.
func rawNumbers(t *testing.T, file string) ([]string, int) {
	t.Helper()
	frags, frames := rawFragments(t, file)
	nums := make([]string, len(frags))
	for i, f := range frags {
		nums[i] = f.number
	}
	return nums, frames
}

// rawFragment is what the cluster tests check of a fragment GetMedia sent.
type rawFragment struct {
	number   string
	producer string // AWS_KINESISVIDEO_PRODUCER_TIMESTAMP: the same for a fragment sent again
}

// rawFragments reads a `get-media --format raw` file: its fragments and their video frames.
func rawFragments(t *testing.T, file string) ([]rawFragment, int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fr := mkv.NewFragmentReader(bufio.NewReader(f))
	var frags []rawFragment
	frames := 0
	for {
		frag, err := fr.Next()
		if err != nil { // io.EOF, or a reader stopped mid-chunk: what came whole counts
			return frags, frames
		}
		n, _ := frag.Tag(mkv.TagFragmentNumber)
		p, _ := frag.Tag(mkv.TagProducerTimestamp)
		frags = append(frags, rawFragment{n, p})
		frames += len(frag.Frames)
	}
}

// putAcks parses `kvs put-media --output json`: the numbers of the PERSISTED fragments.
func putAcks(t *testing.T, out string) []string {
	t.Helper()
	var persisted []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct{ EventType, FragmentNumber string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.EventType == "PERSISTED" {
			persisted = append(persisted, ev.FragmentNumber)
		}
	}
	return persisted
}

// TestE2EClusterFailover runs three `kvs server` nodes on PostgreSQL and versitygw: a producer
// writes through node 2, live readers follow on nodes 1, 2 and 3, and node 2, the stream's writer,
// is killed (SIGKILL) mid-stream. The producer and node 2's reader go on through another node, the
// lease moves, the other readers go on by themselves; afterwards every PERSISTED fragment is
// listed (AWS CLI on node 3) and decodes, and each reader saw every fragment once, in order.
// TestE2EClusterPostgresOutage is the same with PostgreSQL out of reach for a while. The two are
// top-level tests, not parallel subtests of one: a parallel subtest waits for a free place behind
// every other test of the package, and these two, the longest, then ended the package's run.
// None of the package's other tests uses PostgreSQL.
func TestE2EClusterFailover(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	testutil.NeedTool(t, "/usr/bin/aws")
	nodes := clusterNodes(t, 3, backends.Postgres(t))
	n1, n2, n3 := nodes[0].Endpoint, nodes[1].Endpoint, nodes[2].Endpoint
	mustRun(t, n1, nil, "create-stream", "--stream-name", "cam", "--data-retention-in-hours", "1")

	// Live readers on nodes 1 and 3, and one on node 2 that knows the other nodes: when node 2
	// dies it reconnects through another one, from its continuation token.
	readers := []*liveReader{startReader(t, n1, "cam"), startReader(t, n3, "cam"), startReader(t, n2+","+n1+","+n3, "cam")}
	// The producer knows every node; it starts on node 2, which becomes the writer.
	produced := putPattern(t, strings.Join([]string{n2, n1, n3}, ","), "cam", "7s")
	waitFor(t, 20*time.Second, "node 2 writes the stream", func() bool { return writerOf(t, n1, "cam") == n2 })
	time.Sleep(2 * time.Second) // a few fragments PERSISTED through node 2
	nodes[1].kill()
	killed := time.Now()
	var moved string
	waitFor(t, 30*time.Second, "the lease moves to another node", func() bool {
		moved = writerOf(t, n1, "cam")
		return moved == n1 || moved == n3
	})
	t.Logf("the stream moved from node 2 to %s %.1f s after the kill", moved, time.Since(killed).Seconds())
	p := putEnded(t, produced, "")
	checkCluster(t, n3, "cam", putAcks(t, p.out), readers)
}

// TestE2EClusterPostgresOutage runs two nodes that reach PostgreSQL through a backends.Link, cut
// for 4 s (longer than the 3 s lease) while a producer writes and a live reader follows: what
// TestE2EClusterFailover checks afterwards holds, and each node noticed the cut.
func TestE2EClusterPostgresOutage(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	testutil.NeedTool(t, "ffprobe")
	testutil.NeedTool(t, "/usr/bin/aws")
	pg, link := backends.Through(t, backends.Postgres(t))
	nodes := clusterNodes(t, 2, pg)
	n1, n2 := nodes[0].Endpoint, nodes[1].Endpoint
	mustRun(t, n1, nil, "create-stream", "--stream-name", "cam2", "--data-retention-in-hours", "1")
	readers := []*liveReader{startReader(t, n2, "cam2")}
	produced := putPattern(t, n1+","+n2, "cam2", "7s")
	waitFor(t, 20*time.Second, "a node writes cam2", func() bool { return writerOf(t, n1, "cam2") != "" })
	time.Sleep(2 * time.Second)
	link.Cut(t)
	time.Sleep(4 * time.Second)
	link.Restore(t)
	p := putEnded(t, produced, " after PostgreSQL came back")
	checkCluster(t, n1, "cam2", putAcks(t, p.out), readers)
	for i, n := range nodes { // the cut reached each node: its LISTEN connection was reset
		if !strings.Contains(n.stderr.String(), "commit notifications lost") {
			t.Errorf("node %d did not notice PostgreSQL going away:\n%s", i+1, n.stderr.String())
		}
	}
}

// putEnded waits for put-media (putPattern) to end, and fails the test unless it exited 0.
func putEnded(t *testing.T, produced <-chan putResult, after string) putResult {
	t.Helper()
	select {
	case p := <-produced:
		if p.code != ExitOK {
			t.Fatalf("put-media exited %d%s:\n%s", p.code, after, p.err)
		}
		return p
	case <-time.After(90 * time.Second):
		t.Fatalf("put-media did not end%s", after)
	}
	return putResult{}
}

type putResult struct {
	code     int
	out, err string
}

// putPattern starts `kvs put-media` of duration of the live test pattern (320x240, 1 s fragments)
// into stream through endpoints, as a process of its own: the test pattern device is one per
// process (see testPattern), and the cluster test's producer runs for long. The result comes on
// the channel when it exits.
func putPattern(t *testing.T, endpoints, stream, duration string) <-chan putResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), kvsBinary(t), "--endpoint", endpoints, "put-media", "--stream-name", stream,
		"--source", "testsrc", "--width", "320", "--height", "240", "--fragment-duration", "1s", "--duration", duration,
		"--output", "json")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan putResult, 1)
	go func() {
		cmd.Wait()
		done <- putResult{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
	}()
	return done
}

// checkCluster stops the live readers and checks stream against what the producer was told:
// every PERSISTED fragment is listed (the AWS CLI's list-fragments on node) and the whole stream
// decodes (ffprobe of get-media from the first fragment), and each reader got the listed
// fragments after its first one, each once, in order.
func checkCluster(t *testing.T, node, stream string, persisted []string, readers []*liveReader) {
	t.Helper()
	if len(persisted) < 6 {
		t.Fatalf("%s: only %d PERSISTED acks", stream, len(persisted))
	}
	var list struct {
		Fragments []struct{ FragmentNumber string }
	}
	testutil.NewAWSCLI(t, node).OK(&list, "kinesis-video-archived-media", "list-fragments", "--stream-name", stream)
	var listed []string
	for _, f := range list.Fragments {
		listed = append(listed, f.FragmentNumber)
	}
	slices.Sort(listed) // 47-digit numbers: string order is number order
	t.Logf("%s: %d fragments PERSISTED, %d listed", stream, len(persisted), len(listed))
	for i, r := range readers { // they take the last fragments, then stop
		waitFor(t, 20*time.Second, fmt.Sprintf("live reader %d gets the last fragment", i), func() bool {
			got, _ := rawNumbers(t, r.file)
			return len(got) > 0 && got[len(got)-1] == listed[len(listed)-1]
		})
		r.stop()
		<-r.done
	}
	for _, n := range persisted {
		if _, found := slices.BinarySearch(listed, n); !found {
			t.Errorf("%s: PERSISTED fragment %s is not listed", stream, n)
		}
	}
	// Everything stored decodes, frame for frame.
	file := filepath.Join(t.TempDir(), stream+".mkv")
	mustRun(t, node, nil, "get-media", "--stream-name", stream, "--start-selector", "EARLIEST", "--no-follow", "-o", file)
	raw := filepath.Join(t.TempDir(), stream+".raw")
	mustRun(t, node, nil, "get-media", "--stream-name", stream, "--start-selector", "EARLIEST", "--no-follow", "--format", "raw", "-o", raw)
	storedFrags, frames := rawFragments(t, raw)
	var nums []string
	sent := map[string]bool{}
	for _, f := range storedFrags {
		nums = append(nums, f.number)
		sent[f.producer] = true
	}
	if !slices.Equal(nums, listed) {
		t.Errorf("%s: get-media from the start sent %d fragments, %d are listed", stream, len(nums), len(listed))
	}
	if got := ffprobe(t, file); got.Frames["video:h264"] != frames {
		t.Errorf("%s: ffprobe decodes %v of the stored stream, its fragments hold %d video frames", stream, got.Frames, frames)
	} else {
		t.Logf("%s: ffprobe decodes all %d video frames of the %d stored fragments", stream, frames, len(nums))
	}
	for i, r := range readers {
		frags, _ := rawFragments(t, r.file)
		if len(frags) == 0 {
			t.Errorf("%s: live reader %d got nothing (%s)", stream, i, r.err)
			continue
		}
		got, extra := stored(frags, listed, sent)
		if len(got) == 0 {
			t.Errorf("%s: live reader %d got no stored fragment", stream, i)
			continue
		}
		from, _ := slices.BinarySearch(listed, got[0])
		want := listed[from:min(len(listed), from+len(got))]
		if !slices.Equal(got, want) {
			t.Errorf("%s: live reader %d got %d stored fragments %s, want each listed one once, in order: %s", stream, i, len(got), short(got), short(want))
		}
		if extra > maxUnstored {
			t.Errorf("%s: live reader %d got %d fragments that were never stored, want at most %d", stream, i, extra, maxUnstored)
		}
		t.Logf("%s: live reader %d got %d stored fragments, from the %dth listed on, each once, in order (and %d published by a writer that died or lost its lease before committing them, each sent again)",
			stream, i, len(got), from+1, extra)
	}
}

// maxUnstored bounds the fragments a live reader may get that are never stored: the writer's
// pipeline holds at most 8 fragments of an upload published but not yet committed (server/doc.go).
const maxUnstored = 8

// stored returns the numbers of the fragments a live reader got that are listed, and how many it
// got that are not. An unlisted fragment must be one the producer sent again (its producer
// timestamp is a listed fragment's, sent stores the listed fragments' producer timestamps): a
// writer publishes a fragment to live readers before it commits it, so one it received but could
// not commit before it was killed reached them, and its producer sent it again through another
// node, where it was stored under a new number. Any other unlisted fragment is returned as
// listed, and fails the comparison.
func stored(frags []rawFragment, listed []string, sent map[string]bool) (got []string, extra int) {
	for _, f := range frags {
		if _, found := slices.BinarySearch(listed, f.number); !found && sent[f.producer] {
			extra++
			continue
		}
		got = append(got, f.number)
	}
	return got, extra
}

// short writes fragment numbers without their common 11-digit prefix and leading zeros.
func short(s []string) string {
	var b strings.Builder
	for i, n := range s {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprint(&b, strings.TrimLeft(n[min(11, len(n)):], "0"))
	}
	return b.String()
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// --advertise-url may end in "/" (http://host:port/, as URLs are often written): cluster nodes
// still name each other by the URL without it, as a single server does. With the slash kept, the
// writer's URL in GetDataEndpoint and describeCluster was "http://host:port/", and live readers
// on the writer took it for another node's.
func TestE2EClusterAdvertiseURLTrailingSlash(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	pg, b := backends.Postgres(t), backends.S3(t)
	var nodes []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		p := startKVSEnv(t, b.Env(), "--index", pg, "--objects", b.URL(), "--listen", addr,
			"--advertise-url", "http://"+addr+"/", "--lease-ttl", "3s", "--flush-interval", "100ms")
		nodes = append(nodes, p.Endpoint)
	}
	n1, n2 := nodes[0], nodes[1]
	mustRun(t, n1, nil, "create-stream", "--stream-name", "slash", "--data-retention-in-hours", "1")
	produced := putPattern(t, n1, "slash", "8s")
	waitFor(t, 20*time.Second, "a node writes the stream", func() bool { return writerOf(t, n2, "slash") != "" })
	if w := writerOf(t, n2, "slash"); w != n1 {
		t.Errorf("describeCluster: the writer is %q, want %q", w, n1)
	}
	resp, err := http.Post(n2+"/getDataEndpoint", "application/json", strings.NewReader(`{"StreamName":"slash","APIName":"GET_MEDIA"}`))
	if err != nil {
		t.Fatal(err)
	}
	var de struct{ DataEndpoint string }
	err = json.NewDecoder(resp.Body).Decode(&de)
	resp.Body.Close()
	if err != nil || de.DataEndpoint != n1 {
		t.Errorf("GetDataEndpoint on node 2: %q (%v), want the writer's %q", de.DataEndpoint, err, n1)
	}
	// A second upload sent to node 2 (no GetDataEndpoint first) while node 1 writes the stream is
	// relayed to node 1.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if acks, _ := crashUpload(ctx, n2, "slash", 1_700_000_000_000, 0, 100*time.Millisecond, 2); len(acks) < 2 {
		t.Errorf("an upload to node 2, relayed to the writer: %d PERSISTED acks, want 2", len(acks))
	}
	putEnded(t, produced, "")
}
