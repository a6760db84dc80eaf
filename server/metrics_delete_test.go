package server

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestWebhookReusesConnection: a receiver that answers 200 with a short body ("ok", as most web
// frameworks do) must get its events over a kept-alive connection, not one TCP connection per
// event (with fragment.persisted on, one per fragment of every stream). Go's transport keeps a
// connection only when the answer was read to its end before Close: the webhook's answers are
// watched for that (counting connections instead depends on when the transport puts a connection
// back in its pool, which races the next event on a loaded machine).
func TestWebhookReusesConnection(t *testing.T) {
	t.Parallel()
	got := make(chan struct{}, 100)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
		got <- struct{}{}
	}))
	t.Cleanup(rcv.Close)
	e := newMediaEnv(t, "mem", func(c *Config) { c.Webhooks = []string{rcv.URL} })
	var unread, answers atomic.Int64
	// Set before the first event is published (the webhook reads its client after a channel
	// receive of that event).
	e.srv.events.hooks[0].client.Transport = bodyWatch{http.DefaultTransport, &answers, &unread}
	const n = 5
	for i := range n {
		e.createStream(t, "cam"+string(rune('a'+i)), 1)
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no webhook POST within 10 s")
		}
	}
	for answers.Load() < n { // the last answer is closed after the receiver's handler returns
		time.Sleep(10 * time.Millisecond)
	}
	if u := unread.Load(); u != 0 {
		t.Errorf("%d of %d webhook answers closed before their end: each such connection is torn down", u, answers.Load())
	}
}

// bodyWatch counts the answers of its RoundTripper that are closed, and those closed before EOF.
type bodyWatch struct {
	http.RoundTripper
	closed, unread *atomic.Int64
}

func (b bodyWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = &watchedBody{ReadCloser: resp.Body, w: b}
	}
	return resp, err
}

type watchedBody struct {
	io.ReadCloser
	w   bodyWatch
	eof bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.eof = b.eof || errors.Is(err, io.EOF)
	return n, err
}

func (b *watchedBody) Close() error {
	if !b.eof {
		b.w.unread.Add(1)
	}
	b.w.closed.Add(1)
	return b.ReadCloser.Close()
}

// TestClusterMetricsSeriesGoWithDeleteOnOtherNode: a stream written by node 1 and deleted
// through node 2 loses its per-stream ingest series on node 1 too, and frees its place there
// (MetricsMaxStreams 1): the next stream node 1 writes gets a series of its own, not "(other)".
func TestClusterMetricsSeriesGoWithDeleteOnOtherNode(t *testing.T) {
	t.Parallel()
	nodes := newCluster(t, 2, nil, func(c *Config) { c.MetricsMaxStreams = 1 })
	n1, n2 := nodes[0], nodes[1]
	arn := n1.createStream(t, "a", 1)
	c := loadClip(t, "h264.mkv")
	n1.ingestAt(t, "a", c, 0, 2, baseMillis, true)
	if _, ok := sample(scrape(t, n1.ts.URL+"/metrics"), "kvs_ingest_fragments_total", "stream", "a"); !ok {
		t.Fatal("node 1 has no series for stream a after writing it")
	}
	n2.deleteStream(t, arn)
	n1.createStream(t, "b", 1)
	n1.ingestAt(t, "b", c, 0, 2, baseMillis, true)
	fams := scrape(t, n1.ts.URL+"/metrics")
	if v, ok := sample(fams, "kvs_ingest_fragments_total", "stream", "a"); ok {
		t.Errorf("node 1 still serves kvs_ingest_fragments_total{stream=\"a\"} = %v after a was deleted (through node 2)", v)
	}
	if _, ok := sample(fams, "kvs_ingest_fragments_total", "stream", "b"); !ok {
		v, _ := sample(fams, "kvs_ingest_fragments_total", "stream", otherStreams)
		t.Errorf("node 1: stream b has no series of its own (stream=\"(other)\" = %v): the deleted stream a still holds the only place", v)
	}
}

// TestMetricsRecreatedStreamKeepsSeries: DeleteStream's after-effects run after the store's delete;
// a stream created again under the name in between, and uploading already, is another stream
// whose uploads are left alone (TestDeleteLeavesRecreatedStreamUpload). Its ingest series must be
// left alone too: every fragment it receives is counted in kvs_ingest_fragments_total{stream}.
func TestMetricsRecreatedStreamKeepsSeries(t *testing.T) {
	t.Parallel()
	e, c, pc := recreatedDuringDelete(t)
	for i := 1; i < 4; i++ {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
	}
	pc.end()
	v, ok := sample(scrape(t, e.ts.URL+"/metrics"), "kvs_ingest_fragments_total", "stream", "cam")
	if !ok || v != 4 {
		t.Errorf("kvs_ingest_fragments_total{stream=\"cam\"} = %v (present %v) after 4 fragments to the re-created stream, want 4", v, ok)
	}
}
