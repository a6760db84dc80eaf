package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
)

// TestClusterRelaySilentWriter: a producer on node 2 is relayed to node 1, which writes the
// stream, and the link between the nodes goes silent without a reset (a partition, a firewall
// that dropped the flow, a frozen proxy): no byte through, no close. The writer sends an ack at
// least every IdleAckInterval, so node 2 breaks the producer's response off once the writer has
// been silent for several of them, and the producer reconnects (GetDataEndpoint names the
// writer, which it may reach itself). A relay opened while the link is silent gets an error
// answer instead of no answer. Before, both waited on the silent link until TCP gave up (many
// minutes; here for good): no ack, no error, for a producer without a staleness check of its own.
func TestClusterRelaySilentWriter(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	// The writer holds the stream throughout: its uploads are not ended for their silence.
	nodes := newCluster(t, 2, nil, func(c *Config) {
		c.IdleAckInterval = time.Second
		c.PutMediaReadTimeout = 10 * time.Minute
	})
	n1, n2 := nodes[0], nodes[1]
	n2.srv.media.relayAnswerWait = 3 * time.Second // not 25 s: the writer here answers in milliseconds when the link lets it
	// Node 2's requests to other nodes (its relays) go through a link that can go silent.
	linkURL, link := backends.Through(t, n1.ts.URL)
	linkAddr := strings.TrimPrefix(linkURL, "http://")
	var d net.Dialer
	n2.srv.media.feeders.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, linkAddr)
	}
	n1.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := n1.startPut(t, "cam") // node 1 writes the stream
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)

	resp, pw, br := relayedPersisted(t, n2, c)
	defer resp.Body.Close()

	link.Freeze(t)
	go func() { _, _ = pw.Write(c.cluster(t, 2, baseMillis)) }() // the producer goes on
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := br.ReadString('\n'); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if errors.Is(err, io.EOF) {
			t.Fatal("the relayed response ended cleanly when the writer went silent; want it broken off")
		}
		t.Logf("relayed response on a silent link: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("relayed PutMedia on a silent link: no ack, no error, no end for 90 s")
	}

	// A new upload to node 2, relayed while the link is silent, is answered with an error.
	answered := make(chan error, 1)
	go func() {
		resp, _, err := pipedPut(t, n2)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("relayed PutMedia opened on a silent link: %v, want 502 (the writer did not answer)", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("relayed PutMedia opened on a silent link: no answer for 90 s")
	}
}

// A relayed PutMedia whose writer node goes away mid-upload (its connections dropped) ends with
// a broken response, not a clean end of the acks: a producer must not take the end of the relay
// for the end of its upload (the kvs client reconnects either way; a clean end says "done").
func TestClusterRelayWriterGoneBreaksResponse(t *testing.T) {
	t.Parallel()
	n1, n2, _, c, _, _ := writingCluster(t, nil) // node 1 writes the stream
	resp, _, br := relayedPersisted(t, n2, c)
	defer resp.Body.Close()
	n1.ts.CloseClientConnections() // the writer node's connections drop, the relay's among them
	for {
		_, err := br.ReadString('\n')
		if errors.Is(err, io.EOF) {
			t.Fatal("the relayed response ended cleanly when the writer went away; want it broken")
		}
		if err != nil {
			t.Logf("relayed response: %v", err)
			return
		}
	}
}

// pipedPut opens a PutMedia of stream "cam" on e whose body is written to the pipe returned.
func pipedPut(t *testing.T, e *mediaEnv) (*http.Response, *io.PipeWriter, error) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	req := httptestRequest(t, e, "/putMedia", "")
	req.Body = pr
	req.ContentLength = -1
	req.Header.Set(hdrStreamName, "cam")
	req.Header.Set(hdrTimecodeType, "ABSOLUTE")
	req.Header.Set(hdrProducerStartTime, "1700000000.5")
	resp, err := e.ts.Client().Do(req)
	return resp, pw, err
}

// relayedPersisted opens a PutMedia on e, a node that does not write "cam", sends c's header and
// second cluster, and reads the relayed acks until that fragment's PERSISTED.
func relayedPersisted(t *testing.T, e *mediaEnv, c *clip) (*http.Response, *io.PipeWriter, *bufio.Reader) {
	t.Helper()
	resp, pw, err := pipedPut(t, e)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("relayed PutMedia: %d", resp.StatusCode)
	}
	go func() {
		_, _ = pw.Write(c.header())
		_, _ = pw.Write(c.cluster(t, 1, baseMillis))
	}()
	br := bufio.NewReader(resp.Body)
	for persisted := false; !persisted; {
		line, err := br.ReadString('\n')
		if err != nil {
			resp.Body.Close()
			t.Fatalf("acks through the relay: %v", err)
		}
		persisted = strings.Contains(line, ackPersisted)
	}
	return resp, pw, br
}
