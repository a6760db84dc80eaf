package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// pipeListener hands the server the far ends of net.Pipe connections that its dial makes: an
// HTTP connection with no kernel buffers, whose deadlines run on the synctest bubble's clock.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { close(l.closed); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storeLargeFragment creates stream name in st and stores payload as its one fragment.
func storeLargeFragment(t *testing.T, st store.Store, name string, payload []byte) uint64 {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateStream(ctx, store.Stream{Name: name, RetentionHours: 1}); err != nil {
		t.Fatal(err)
	}
	n, err := st.NextNumber(ctx, name)
	if err == nil {
		now := time.Now()
		err = store.Append(ctx, st, name, store.FragmentMeta{Number: n, ServerTime: now, ProducerTime: now, Duration: time.Second}, payload)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A reader that reads slowly but steadily gets a chunk that takes longer than MediaWriteTimeout to
// send: the timeout drops a client that stops reading, not one that reads. (The whole chunk had to
// go within it: over a link that moves a fragment in more than 30 s, GetMedia and
// GetMediaForFragmentList cut every large chunk, and a reconnecting reader met the same chunk again;
// GetClip every large fragment of a clip.)
func TestSlowReaderGetsLargeChunks(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		st := store.NewMem()
		payload := bytes.Repeat([]byte("kvs!"), 1<<20) // 4 MiB: a 16 s fragment at 2 Mbit/s
		n := storeLargeFragment(t, st, "cam", payload)
		// GetClip's: a fragment of the H.264 clip whose keyframe carries 4 MiB more (a NAL unit of
		// filler the decoder skips is not needed: the remuxer copies frames as they are).
		c := loadClip(t, "h264.mkv")
		if err := st.CreateStream(ctx, store.Stream{Name: "clip", RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
		frames := append([]mkv.Frame(nil), c.frags[0]...)
		frames[0].Data = append(append([]byte(nil), frames[0].Data...), payload...)
		cluster, err := mkv.AppendCluster(nil, frames[0].Timecode, frames)
		if err != nil {
			t.Fatal(err)
		}
		clipStart := time.Now()
		cn, err := st.NextNumber(ctx, "clip")
		if err == nil {
			err = store.Append(ctx, st, "clip", store.FragmentMeta{Number: cn, ServerTime: clipStart, ProducerTime: clipStart, Duration: time.Second},
				append(c.header(), cluster...))
		}
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Store: st, MediaWriteTimeout: time.Second, RetentionInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		lis := newPipeListener()
		hs := &http.Server{Handler: srv}
		served := make(chan struct{})
		go func() { defer close(served); _ = hs.Serve(lis) }()
		tr := &http.Transport{DialContext: lis.dial}
		defer func() {
			tr.CloseIdleConnections()
			_ = hs.Close()
			<-served
			_ = srv.Close()
			_ = st.Close()
		}()

		for _, tc := range []struct{ path, body string }{
			{"/getMedia", `{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`},
			{"/getMediaForFragmentList", `{"StreamName":"cam","Fragments":["` + formatFragmentNumber(n) + `"]}`},
			{"/getClip", fmt.Sprintf(`{"StreamName":"clip","ClipFragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":%d,"EndTimestamp":%d}}}`,
				clipStart.Unix()-1, clipStart.Unix()+1)},
		} {
			req, err := http.NewRequest(http.MethodPost, "http://kvs"+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(hdrNoFollow, "1")
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%s: %d %s", tc.path, resp.StatusCode, b)
			}
			// At most 16 KiB every 100 ms: 160 KiB/s, over 26 s for the chunk.
			var got int
			buf := make([]byte, 16<<10)
			for {
				k, err := resp.Body.Read(buf)
				got += k
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s: read error after %d of over %d bytes: %v", tc.path, got, len(payload), err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			resp.Body.Close()
			if got <= len(payload) {
				t.Fatalf("%s: %d bytes, want the chunk (over %d)", tc.path, got, len(payload))
			}
		}
	})
}
