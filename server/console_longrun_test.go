package server

import (
	"context"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

// TestConsoleLivePlayerForgetsPlayedFragments: a stream page left open on a wall display plays
// live for weeks. The player kept the number of every fragment it had appended, in a Set that
// only grew: about 4 MB a day at 2 s fragments, for a page that needs only the numbers its
// current playlist lists (a LIVE playlist never lists an older one again). After 12 s of 1 s
// fragments, what the page holds in a Set of fragment numbers must stay near the 5 a LIVE
// playlist lists, not count every fragment played.
func TestConsoleLivePlayerForgetsPlayedFragments(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	_, ctx := liveCam(t, 10*time.Second, "/#/stream/cam")
	from := 0.0 // producer time where playing was first seen
	played12s := func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		if from == 0 && !s.Paused && s.Producer > 0 {
			from = s.Producer
		}
		return from > 0 && s.Producer-from >= 12, s.String()
	}
	consoleWait(t, 40*time.Second, "the live player plays 12 s of fragments", played12s)
	if n := largestFragmentNumberSet(t, ctx); n > 8 {
		t.Errorf("the page holds a Set of %d fragment numbers after playing 12 s live, want at most 8 (the playlist lists 5): it grows with every fragment played", n)
	}
}

// largestFragmentNumberSet returns the size of the largest Set in the page that holds fragment
// numbers (strings of 20 digits or more), found through the DevTools heap query (heapQuery), so
// that the page needs no hook of its own.
func largestFragmentNumberSet(t *testing.T, c context.Context) int {
	t.Helper()
	return heapQuery[int](t, c, "Set.prototype", `function () {
	  return Math.max(0, ...this.filter((s) => [...s].some((v) => typeof v === 'string' && /^[0-9]{20,}$/.test(v))).map((s) => s.size));
	}`)
}
