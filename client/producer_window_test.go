package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// Send blocks once the fragments that are not final reach MaxInFlightBytes, even below
// MaxInFlight: against a server that reads every byte but never acknowledges, three 1 MB
// fragments fit a 3.5 MB window and the fourth waits.
func TestProducerMaxInFlightBytes(t *testing.T) {
	t.Parallel()
	received := make(chan int64, 1)
	var ts *httptest.Server
	ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/getDataEndpoint":
			_ = json.NewEncoder(w).Encode(map[string]string{"DataEndpoint": ts.URL})
		case "/putMedia":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			n, _ := io.Copy(io.Discard, r.Body) // no acks
			received <- n
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	c, err := New(t.Context(), Config{Endpoint: ts.URL, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	retention := 24
	p, err := NewProducer(c, ProducerConfig{Stream: "cam", MaxInFlight: 100, MaxInFlightBytes: 3<<20 + 1<<19, RetentionHours: &retention})
	if err != nil {
		t.Fatal(err)
	}
	frag := func(i int) *mkv.Fragment {
		return &mkv.Fragment{Tracks: []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC"}},
			Timecode: int64(i) * 1000, Frames: []mkv.Frame{{Track: 1, Timecode: int64(i) * 1000, Keyframe: true, Data: make([]byte, 1<<20)}}}
	}
	for i := range 3 {
		if err := p.Send(t.Context(), frag(i)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := p.Send(ctx, frag(3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fourth Send with 3 MB not final: %v, want it to block until its context ends", err)
	}
	if st := p.Stats(); st.Fragments != 3 {
		t.Errorf("stats %+v, want 3 fragments queued", st)
	}
	closeCtx, cancelClose := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancelClose()
	var pe *ProducerError
	if err := p.Close(closeCtx); !errors.As(err, &pe) || len(pe.Failed) != 3 {
		t.Fatalf("Close: %v, want the 3 unacknowledged fragments reported", err)
	}
	select {
	case n := <-received:
		if n == 0 {
			t.Error("the server got nothing")
		}
	case <-time.After(5 * time.Second):
		t.Error("the upload did not end after Close")
	}
}

// recordingWriter keeps what it was given and the size of each Write.
type recordingWriter struct {
	data   []byte
	writes []int
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.data = append(w.data, p...)
	w.writes = append(w.writes, len(p))
	return len(p), nil
}

// uploadBody hands the transport pieces of up to 1 MiB, in order and complete.
func TestUploadBodyWriteTo(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	want := payloadBytes(3<<20 + 12345)
	go func() {
		_, _ = pw.Write([]byte("header"))
		_, _ = pw.Write(want)
		pw.Close()
	}()
	var w recordingWriter
	n, err := uploadBody{pr}.WriteTo(&w)
	if err != nil || n != int64(len(want)+6) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
	if string(w.data[:6]) != "header" || string(w.data[6:]) != string(want) {
		t.Fatal("WriteTo changed the bytes")
	}
	for _, k := range w.writes {
		if k > uploadChunk {
			t.Fatalf("a write of %d bytes, over %d", k, uploadChunk)
		}
	}
	if len(w.writes) > 6 {
		t.Errorf("%d writes for 3 MiB: %v, want pieces of 1 MiB", len(w.writes), w.writes)
	}
}

func payloadBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
