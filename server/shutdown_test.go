package server

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
)

// Server.Close drains: an upload in the middle of a fragment may finish it (RECEIVED,
// PERSISTED) and then ends with ERROR 5000 instead of starting another; an idle upload ends with
// ERROR 5000 at once; a live GetMedia response ends cleanly; everything stored decodes.
func TestCloseDrainsMedia(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	a, b := e.startPut(t, "cam"), e.startPut(t, "cam")
	a.write(c.header())
	b.write(c.header())
	n0 := b.fragment(c.cluster(t, 0, baseMillis+100_000), c.fragTimecode(0, baseMillis+100_000), true)

	resp := e.post(t, t.Context(), "/getMedia", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "NOW"}})
	if resp.StatusCode != 200 {
		t.Fatalf("getMedia: %d", resp.StatusCode)
	}
	consumerDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		consumerDone <- err
	}()

	ca := c.cluster(t, 0, baseMillis)
	a.write(ca[:len(ca)/2])
	a.expect(ackBuffering, 0)
	start := time.Now()
	e.srv.Close()

	if ev := b.expectError(5000); ev.FragmentNumber != "" {
		t.Errorf("idle upload's ERROR names fragment %s", ev.FragmentNumber)
	}
	select {
	case err := <-consumerDone:
		if err != nil {
			t.Fatalf("live GetMedia did not end cleanly: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("live GetMedia still open 5 s after Close")
	}
	a.write(ca[len(ca)/2:]) // the open fragment completes within the grace period...
	a.write(c.cluster(t, 1, baseMillis))
	ra := a.expect(ackReceived, 0)
	a.expect(ackPersisted, 0)
	if ev := a.expectError(5000); ev.FragmentNumber != "" { // ...and the next one is refused
		t.Errorf("ERROR names fragment %s, want none (no number reserved)", ev.FragmentNumber)
	}
	if d := time.Since(start); d > putMediaDrainGrace {
		t.Errorf("drain took %v", d)
	}
	metas, frags := storedFragments(t, e.store, "cam")
	if len(metas) != 2 || metas[0].Number != n0 || formatFragmentNumber(metas[1].Number) != ra.FragmentNumber {
		t.Fatalf("stored %+v, want %d and %s", metas, n0, ra.FragmentNumber)
	}
	if len(frags[1].Frames) != len(c.frags[0]) {
		t.Fatalf("drained fragment has %d frames, want %d", len(frags[1].Frames), len(c.frags[0]))
	}

	// An upload that starts after Close takes nothing.
	late := e.startPut(t, "cam")
	late.writeAsync(append(c.header(), c.cluster(t, 2, baseMillis)...))
	late.expectError(5000)
}

// Server.Close returns only once no upload is in its lingering close: those connections are
// hijacked, which http.Server.Shutdown does not wait for, and kvs server exited right after both
// (TestGracefulShutdown in cmd saw its producer's connection reset before it read the last ack,
// on a loaded machine). Here an upload refused after Close lingers, its producer still
// connected (a raw connection: Go's client closes one whose response ended first): a second
// Close waits for it.
func TestCloseWaitsForLingeringUploads(t *testing.T) {
	testutil.Slow(t) // waits out write timeouts for seconds
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	e.srv.Close()
	conn, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := append(c.header(), c.cluster(t, 0, baseMillis)...)
	fmt.Fprintf(conn, "POST /putMedia HTTP/1.1\r\nHost: kvs\r\n%s: cam\r\n%s: ABSOLUTE\r\n%s: 1700000000.5\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", hdrStreamName, hdrTimecodeType, hdrProducerStartTime, len(body), body)
	var got []byte
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for !bytes.HasSuffix(got, []byte("\r\n0\r\n\r\n")) { // the response's end, written in lingerClose
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("response %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Contains(got, []byte(`"ErrorId":5000`)) {
		t.Fatalf("response %q, want ERROR 5000", got)
	}
	if n := e.srv.media.lingering.Load(); n != 1 {
		t.Fatalf("%d uploads lingering after the refused one's response ended, want 1", n)
	}
	start := time.Now()
	e.srv.Close()
	if n := e.srv.media.lingering.Load(); n != 0 {
		t.Errorf("Close returned with %d uploads lingering", n)
	}
	t.Logf("Close waited %v", time.Since(start).Round(time.Millisecond))
}

// getMediaHeldAtSecond stores 8 fragments and starts a GetMedia from EARLIEST (following the
// stream or not) whose delivery of the second fragment waits for release; held closes when it
// does. The body closes when the test ends.
func getMediaHeldAtSecond(t *testing.T, follow bool) (e *mediaEnv, nums []uint64, body io.ReadCloser, held, release chan struct{}) {
	t.Helper()
	e = newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	nums = e.ingest(t, "cam", loadClip(t, "h264.mkv"), 0, 8)
	held, release = make(chan struct{}), make(chan struct{})
	e.srv.media.testDeliver = func(n uint64, _ bool) {
		if n == nums[1] {
			close(held)
			<-release
		}
	}
	body = e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "EARLIEST"}, follow)
	t.Cleanup(func() { body.Close() })
	return e, nums, body, held, release
}

// Close ends a GetMedia response that is catching up on stored fragments too, between two chunks,
// not only one waiting at the live edge: kvs server's graceful shutdown waited out its timeout
// (10 s, then cut every connection) while a reader downloaded an archive with EARLIEST.
func TestCloseEndsCatchingUpGetMedia(t *testing.T) {
	t.Parallel()
	e, nums, body, held, release := getMediaHeldAtSecond(t, true)
	got := make(chan int, 1)
	go func() {
		fr := mkv.NewFragmentReader(body)
		n := 0
		for {
			if _, err := fr.Next(); err != nil {
				break
			}
			n++
		}
		got <- n
	}()
	<-held // the second fragment is on its way
	e.srv.Close()
	close(release)
	if n := <-got; n != 2 {
		t.Fatalf("GetMedia delivered %d of %d fragments after Close, want it to end after the one in flight (2)", n, len(nums))
	}
}

// A no-follow GetMedia (x-kvs-no-follow: 1) ends cleanly only at the live edge: that end tells
// its reader it has everything. Cut short by Close while catching up, it ends with an error chunk
// (5000, which client.Consumer retries from the continuation token) instead: a clean end made
// `kvs get-media --no-follow` exit 0 with part of the stream during a server restart.
func TestCloseEndsNoFollowGetMediaWithError(t *testing.T) {
	t.Parallel()
	e, nums, body, held, release := getMediaHeldAtSecond(t, false)
	got := make(chan []*mkv.Fragment, 1)
	go func() { got <- readFragments(t, body) }()
	<-held // the second fragment is on its way
	e.srv.Close()
	close(release)
	frags := <-got
	if len(frags) != 3 || len(frags[2].Frames) != 0 {
		t.Fatalf("got %d documents after Close, want the 2 fragments sent and an error chunk", len(frags))
	}
	if id := tag(t, frags[2], mkv.TagErrorID); id != "5000" {
		t.Fatalf("error chunk ERROR_ID %s, want 5000", id)
	}
	if n := tag(t, frags[2], mkv.TagFragmentNumber); n != formatFragmentNumber(nums[1]) {
		t.Errorf("error chunk FRAGMENT_NUMBER %s, want the last one sent %s", n, formatFragmentNumber(nums[1]))
	}
}
