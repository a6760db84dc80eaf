package server

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/openkvs/kvs/internal/testutil"
)

// heapQuery calls fn (a JavaScript function declaration) with this bound to an array of every
// object in the page whose prototype is proto (for example "Map.prototype"), found through the
// DevTools heap query after a garbage collection, and decodes the JSON value it returns. The
// page needs no hook of its own.
func heapQuery[T any](t *testing.T, c context.Context, proto, fn string) T {
	t.Helper()
	p, err := chromedp.Call(c, cdpruntime.Evaluate, cdpruntime.EvaluateParams{Expression: proto})
	if err != nil || p.Result == nil {
		t.Fatalf("%s: %v", proto, err)
	}
	objs, err := chromedp.Call(c, cdpruntime.QueryObjects, cdpruntime.QueryObjectsParams{PrototypeObjectID: p.Result.ObjectID})
	if err != nil || objs.Objects == nil {
		t.Fatalf("Runtime.queryObjects(%s): %v", proto, err)
	}
	byValue := true
	res, err := chromedp.Call(c, cdpruntime.CallFunctionOn, cdpruntime.CallFunctionOnParams{
		ObjectID: objs.Objects.ObjectID, ReturnByValue: &byValue, FunctionDeclaration: fn,
	})
	if err != nil || res.Result == nil || res.ExceptionDetails != nil {
		t.Fatalf("querying the page's %s objects: %v %v", proto, err, fmt.Sprint(res.ExceptionDetails))
	}
	var v T
	if err := json.Unmarshal(res.Result.Value, &v); err != nil {
		t.Fatalf("querying the page's %s objects: %s: %v", proto, res.Result.Value, err)
	}
	return v
}

// TestConsoleListForgetsDeletedStreams: a stream list left open on a wall display sees streams
// come and go for weeks. The page kept, for every stream name it had ever listed, its latest
// picture (a data: URL), its row's debounced refresh and its LIVE session (once its page was
// visited), also after the stream was deleted. After three streams with pictures are deleted, no
// Map in the page may still be keyed by their names.
func TestConsoleListForgetsDeletedStreams(t *testing.T) {
	testutil.Slow(t)
	t.Parallel()
	e := newMediaEnv(t, "mem")
	c := loadClip(t, "h264.mkv")
	var arns []string
	for i := range 3 {
		name := fmt.Sprintf("gone-%d", i)
		arns = append(arns, e.createStream(t, name, 24))
		stop := livePut(t, e, name, c, time.Now().Add(-5*time.Second).UnixMilli())
		t.Cleanup(stop)
		defer stop()
	}
	ctx := newBrowser(t)
	consoleDo(t, ctx, "open the console", chromedp.Navigate(e.ts.URL+"/"))
	consoleWait(t, 30*time.Second, "every stream's row shows its latest picture", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream^="gone-"] td.latest img').length`)
		return n == 3, fmt.Sprintf("%d pictures", n)
	})
	// A visit to a stream's page keeps its LIVE session for the next visit.
	consoleDo(t, ctx, "open gone-0's page", chromedp.Evaluate[chromedp.Void](`document.querySelector('a[href="#/stream/gone-0"]').click()`))
	consoleWait(t, 20*time.Second, "gone-0's live player plays", func() (bool, string) {
		s := eval[playerState](t, ctx, playerStateJS)
		return !s.Paused && s.Frames > 0, s.String()
	})
	consoleDo(t, ctx, "back to the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
	consoleWait(t, 20*time.Second, "the list shows the pictures again", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#streams tr[data-stream^="gone-"] td.latest img').length`)
		return n == 3, fmt.Sprintf("%d pictures", n)
	})
	time.Sleep(2 * time.Second) // fragments come: each row gets its debounced refresh
	for _, arn := range arns {
		e.deleteStream(t, arn)
	}
	consoleWait(t, 15*time.Second, "the deleted streams' rows go", func() (bool, string) {
		n := eval[int](t, ctx, `document.querySelectorAll('#streams tbody tr').length`)
		return n == 0, fmt.Sprintf("%d rows", n)
	})
	held := heapQuery[[]string](t, ctx, "Map.prototype", `function () {
	  return this.flatMap((m) => [...m.keys()].filter((k) => typeof k === 'string' && k.startsWith('gone-')).map((k) => m.size + ' ' + k));
	}`)
	if len(held) > 0 {
		t.Errorf("after the streams were deleted the page still holds Map entries for them (size, key): %q", held)
	}
}
