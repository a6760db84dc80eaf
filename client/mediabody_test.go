package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/servertest"
	"github.com/openkvs/kvs/mkv"
)

// connsListener records the connections it accepts, so that a test can close them server-side.
type connsListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *connsListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// streamAt creates the stream "cam" on the server at url and produces the H.264 clip's first n
// fragments into it (n 0: all of them); it returns a client of that server, the fragments sent
// and their numbers, in order.
func streamAt(t *testing.T, url string, n int) (*mediaServer, []*mkv.Fragment, []string) {
	t.Helper()
	m := &mediaServer{URL: url}
	var err error
	if m.client, err = New(t.Context(), Config{Endpoint: url}); err != nil {
		t.Fatal(err)
	}
	m.createStream(t, "cam", 24)
	frags := clipFragments(t, "h264.mkv", time.Second)
	if n > 0 {
		frags = frags[:n]
	}
	if _, err := produce(t, m.client, ProducerConfig{Stream: "cam"}, frags); err != nil {
		t.Fatal(err)
	}
	list, err := m.client.ListFragments(t.Context(), ListFragmentsInput{Stream: "cam"})
	if err != nil || len(list) != len(frags) {
		t.Fatalf("%d fragments listed (%v), want %d", len(list), err, len(frags))
	}
	var numbers []string
	for _, f := range list {
		numbers = append(numbers, f.FragmentNumber)
	}
	return m, frags, numbers
}

// GetMediaForFragmentListForFile, against a kvs server as `kvs server` runs it (FS store, its
// Listener and ConnContext), goes over a connection of the client's own, whose answer
// WriteToFile puts at its offset in a file: the same bytes as GetMediaForFragmentList reads.
// The connection serves the next request; one the server closed meanwhile is replaced without an
// error; an API error is an *APIError as on the other path; a cancelled context ends the body and
// its connection.
func TestGetMediaForFragmentListForFile(t *testing.T) {
	t.Parallel()
	var lis *connsListener
	url := servertest.Start(t, func(l net.Listener) net.Listener {
		lis = &connsListener{Listener: l}
		return lis
	})
	m, frags, numbers := streamAt(t, url, 0)
	plain, err := m.client.GetMediaForFragmentList(t.Context(), "cam", numbers)
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(plain)
	plain.Close()
	if err != nil {
		t.Fatal(err)
	}

	c, err := New(t.Context(), Config{Endpoint: url}) // its own HTTP client: the raw exchange applies
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	const at = 1000
	var first net.Conn
	for round := range 3 {
		body, err := c.GetMediaForFragmentListForFile(t.Context(), "cam", numbers)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if body.conn == nil || body.Length != int64(len(want)) {
			t.Fatalf("round %d: raw exchange %v, Length %d; want one, %d", round, body.conn != nil, body.Length, len(want))
		}
		switch round {
		case 0:
			first = body.conn
		case 1:
			if body.conn != first {
				t.Errorf("round 1: a new connection, want the first one again")
			}
		}
		n, err := body.WriteToFile(out, at)
		body.Close()
		if err != nil || n != int64(len(want)) {
			t.Fatalf("round %d: WriteToFile: %d bytes, %v; want %d", round, n, err, len(want))
		}
		got := make([]byte, len(want)+1)
		k, _ := out.ReadAt(got, at)
		if !bytes.Equal(got[:k], want) {
			t.Fatalf("round %d: the file holds %d bytes at %d that differ from GetMediaForFragmentList's %d", round, k, at, len(want))
		}
		if round == 1 {
			lis.closeAll() // the server drops the idle connection: round 2 must not see it
		}
	}

	// Read, not written to a file: the same bytes, in fragments.
	body, err := c.GetMediaForFragmentListForFile(t.Context(), "cam", numbers[:2])
	if err != nil {
		t.Fatal(err)
	}
	fr := mkv.NewFragmentReader(body)
	for i := range 2 {
		f, err := fr.Next()
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if n, _ := f.Tag(mkv.TagFragmentNumber); n != numbers[i] || len(f.Frames) != len(frags[i].Frames) {
			t.Errorf("fragment %d: number %s with %d frames, want %s with %d", i, n, len(f.Frames), numbers[i], len(frags[i].Frames))
		}
	}
	if _, err := fr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after 2 fragments: %v, want EOF", err)
	}
	body.Close()

	_, err = c.GetMediaForFragmentListForFile(t.Context(), "cam", []string{"99999999"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "ResourceNotFoundException" || ae.Status != 404 {
		t.Errorf("unknown fragment: %v, want ResourceNotFoundException (404)", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	body, err = c.GetMediaForFragmentListForFile(ctx, "cam", numbers)
	if err != nil {
		t.Fatal(err)
	}
	conn := body.conn
	cancel()
	if _, err := body.WriteToFile(out, 0); err == nil {
		t.Error("WriteToFile after the context was cancelled: no error")
	}
	body.Close()
	if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the cancelled body's connection: write %v, want closed", err)
	}
}

// A kept connection serves the next request to the same endpoint also when the endpoint names
// its host (http://localhost:port, as `kvs --endpoint-url` is usually given), not only by address.
func TestGetMediaForFragmentListForFileReuseByName(t *testing.T) {
	t.Parallel()
	url := strings.Replace(servertest.Start(t, nil), "127.0.0.1", "localhost", 1)
	_, _, numbers := streamAt(t, url, 2)
	numbers = numbers[:1]
	c, err := New(t.Context(), Config{Endpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	var first net.Conn
	for round := range 2 {
		body, err := c.GetMediaForFragmentListForFile(t.Context(), "cam", numbers)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if body.conn == nil {
			t.Fatalf("round %d: no raw exchange", round)
		}
		if round == 0 {
			first = body.conn
		} else if body.conn != first {
			t.Errorf("round 1: a new connection to %s, want the first one again", url)
		}
		if _, err := io.Copy(io.Discard, body); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		body.Close()
	}
}

// A body of GetMediaForFragmentListForFile is tied to its context as GetMediaForFragmentList's
// is: when the context is done, its connection closes, also before the caller's Close (a caller
// that gives up on a transfer by cancelling it). Before, the cancellation only set a deadline on
// the connection, which stayed open until Close, and the server's handler stayed blocked
// writing to it.
func TestGetMediaForFragmentListForFileCancelClosesConnection(t *testing.T) {
	t.Parallel()
	url := servertest.Start(t, nil)
	_, _, numbers := streamAt(t, url, 1)
	c, err := New(t.Context(), Config{Endpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	many := make([]string, MaxFragmentsPerRequest) // an answer larger than the sockets' buffers
	for i := range many {
		many[i] = numbers[0]
	}
	ctx, cancel := context.WithCancel(t.Context())
	body, err := c.GetMediaForFragmentListForFile(ctx, "cam", many)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if body.conn == nil {
		t.Fatal("no raw exchange")
	}
	cancel()
	wait, stop := context.WithTimeout(t.Context(), 10*time.Second) // a hang, not a speed, check
	defer stop()
	for {
		// A closed connection refuses writes; one with a deadline in the past says timeout.
		_, err := body.conn.Write([]byte("x"))
		if errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case <-wait.Done():
			t.Fatalf("the cancelled body's connection is still open before Close: write %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
