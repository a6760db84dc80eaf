package server

import (
	"context"
	"testing"
	"time"
)

// TestSegShareBuildPanics: a segment whose making panics (net/http recovers a handler's panic and
// the server goes on) leaves nothing behind: the panic goes on to the handler, and the next
// request for the segment makes it, where it waited for ever on the first one's.
func TestSegShareBuildPanics(t *testing.T) {
	t.Parallel()
	var s segShares
	key := segKey{stream: "cam", n: 1}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the build's panic was not passed on")
			}
		}()
		_, _, _ = s.share(t.Context(), key, func() ([]byte, func(), error) { panic("remux") })
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a bound on a hang, not a figure
	defer cancel()
	body, done, err := s.share(ctx, key, func() ([]byte, func(), error) { return []byte("seg"), nil, nil })
	if err != nil || string(body) != "seg" {
		t.Fatalf("the next request after a panic: %q, %v; want the segment made again", body, err)
	}
	done()
}
