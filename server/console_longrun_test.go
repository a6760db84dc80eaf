package server

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

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
// numbers (strings of 20 digits or more), found through the DevTools heap query, so that the
// page needs no hook of its own.
func largestFragmentNumberSet(t *testing.T, c context.Context) int {
	t.Helper()
	proto, err := chromedp.Call(c, cdpruntime.Evaluate, cdpruntime.EvaluateParams{Expression: "Set.prototype"})
	if err != nil || proto.Result == nil {
		t.Fatalf("Set.prototype: %v", err)
	}
	sets, err := chromedp.Call(c, cdpruntime.QueryObjects, cdpruntime.QueryObjectsParams{PrototypeObjectID: proto.Result.ObjectID})
	if err != nil || sets.Objects == nil {
		t.Fatalf("Runtime.queryObjects(Set.prototype): %v", err)
	}
	byValue := true
	res, err := chromedp.Call(c, cdpruntime.CallFunctionOn, cdpruntime.CallFunctionOnParams{
		ObjectID:      sets.Objects.ObjectID,
		ReturnByValue: &byValue,
		FunctionDeclaration: `function () {
		  return Math.max(0, ...this.filter((s) => [...s].some((v) => typeof v === 'string' && /^[0-9]{20,}$/.test(v))).map((s) => s.size));
		}`,
	})
	if err != nil || res.Result == nil || res.ExceptionDetails != nil {
		t.Fatalf("counting the page's Sets: %v %v", err, fmt.Sprint(res.ExceptionDetails))
	}
	n, err := strconv.Atoi(string(res.Result.Value))
	if err != nil {
		t.Fatalf("counting the page's Sets: %q: %v", res.Result.Value, err)
	}
	return n
}
