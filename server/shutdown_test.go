package server

import (
	"io"
	"testing"
	"time"
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
