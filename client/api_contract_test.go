package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// stallGetMedia holds every GetMedia request before it answers, until release is closed.
func stallGetMedia(release chan struct{}) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMedia" {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	}
}

// TestConsumerNextCancelBeforeAnswer: "cancel Next's ctx to unblock it" must also hold while
// the GetMedia request waits for its response headers.
func TestConsumerNextCancelBeforeAnswer(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	m := startMedia(t, stallGetMedia(release), nil)
	t.Cleanup(func() { close(release) }) // runs before the server closes
	m.createStream(t, "cam", 24)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := cons.Next(ctx); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Next = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Next still blocked 3 s after its ctx was done: the GetMedia request ignores ctx until the server answers")
	}
}

// TestConsumerNoFollowIdleBeforeAnswer: with NoFollow, IdleTimeout says the read ends
// (io.EOF) when nothing arrives for IdleTimeout; a server that never answers the request must not
// block Next for ever.
func TestConsumerNoFollowIdleBeforeAnswer(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	m := startMedia(t, stallGetMedia(release), nil)
	t.Cleanup(func() { close(release) })
	m.createStream(t, "cam", 24)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true,
		IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	done := make(chan error, 1)
	go func() { _, err := cons.Next(t.Context()); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) && err == nil {
			t.Errorf("Next = %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Next still blocked 3 s with IdleTimeout 300ms: the idle timer only starts once the response headers arrive")
	}
}

// TestProducerCloseTwice: a second Close of a producer whose first Close returned nil (every
// fragment stored) must not invent a failure because its ctx is done: the producer is already done.
func TestProducerCloseTwice(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "cam", 24)
	done, cancel := context.WithCancel(t.Context())
	cancel()
	bad := 0
	for range 20 {
		p, err := NewProducer(m.client, ProducerConfig{Stream: "cam-" + t.Name(), RetentionHours: new(int)})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Close(t.Context()); err != nil {
			t.Fatalf("first Close = %v", err)
		}
		if err := p.Close(done); err != nil {
			bad++
			if bad == 1 {
				t.Logf("second Close = %v", err)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of 20 second Closes (with a done ctx) returned an error after the first returned nil", bad)
	}
}

// TestProducerCloseAllStored: Close returns nil when every fragment was stored, even when its
// ctx is done by then: nothing is pending, so nothing can be failed with ctx's error.
func TestProducerCloseAllStored(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	frags := clipFragments(t, "h264.mkv", time.Second)[:3]
	bad := 0
	for i := range 5 {
		name := fmt.Sprintf("cam%d", i)
		m.createStream(t, name, 24)
		p, err := NewProducer(m.client, ProducerConfig{Stream: name})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frags {
			if err := p.Send(t.Context(), f); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); p.Stats().Stored < len(frags); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("stats %+v", p.Stats())
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := p.Close(ctx); err != nil {
			bad++
			t.Logf("Close after %d/%d stored = %v", p.Stats().Stored, len(frags), err)
		}
	}
	if bad > 0 {
		t.Errorf("%d of 5 Closes returned an error though every fragment was stored", bad)
	}
}

// TestReadAcksPackedThenNewline: back-to-back objects ("}{", which ReadAcks says it splits)
// followed by a newline, all in one read, as a proxy that packs two events into one chunk sends them.
func TestReadAcksPackedThenNewline(t *testing.T) {
	t.Parallel()
	in := `{"EventType":"BUFFERING","FragmentTimecode":5,"FragmentNumber":"1"}{"EventType":"RECEIVED","FragmentTimecode":5,"FragmentNumber":"1"}` + "\n" +
		`{"EventType":"PERSISTED","FragmentTimecode":5,"FragmentNumber":"1"}` + "\n"
	var got []Ack
	err := ReadAcks(strings.NewReader(in), func(a Ack) error { got = append(got, a); return nil })
	if err != nil || len(got) != 3 {
		t.Fatalf("ReadAcks = %v after %d acks %+v, want 3 acks", err, len(got), got)
	}
}

// TestConsumerPollingWithTimeouts: a follower polled with a short ctx per Next (a common
// pattern: Next(ctx with timeout) in a loop) on a quiet stream. A done ctx only drops the
// connection; the next call resumes. It must not count as a failed attempt that grows the backoff
// until Next sleeps longer than its ctx and never connects again.
func TestConsumerPollingWithTimeouts(t *testing.T) {
	t.Parallel()
	m := startMedia(t, nil, nil)
	m.createStream(t, "cam", 24)
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	poll := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := cons.Next(ctx)
		return err
	}
	for range 4 { // the stream is quiet: every poll times out
		if err := poll(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("poll = %v", err)
		}
	}
	frags := clipFragments(t, "h264.mkv", time.Second)[:2]
	if _, err := produce(t, m.client, ProducerConfig{Stream: "cam"}, frags); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		err := poll()
		if err == nil {
			return
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
	}
	t.Fatal("no fragment in 5 s of polling though two were stored: each Next sleeps a backoff longer than its ctx before connecting")
}

// TestConsumerFragmentTooLargeIsFinal: a fragment over ConsumerConfig.MaxFragmentSize is over it
// on every connection. Next must return mkv.ErrElementTooLarge at once, not download the same
// fragment MaxAttempts times with backoff (26 s with the defaults) before saying so.
func TestConsumerFragmentTooLargeIsFinal(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	m, _ := startCam(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/getMedia" {
				requests.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	cons, err := NewConsumer(m.client, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true,
		MaxFragmentSize: 1000, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	_, err = cons.Next(t.Context())
	if !errors.Is(err, mkv.ErrElementTooLarge) {
		t.Fatalf("Next = %v, want mkv.ErrElementTooLarge", err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d GetMedia requests for a fragment over MaxFragmentSize, want 1: the same fragment was downloaded again and again", n)
	}
	if _, err2 := cons.Next(t.Context()); err2 != err {
		t.Errorf("error not sticky: %v", err2)
	}
}
