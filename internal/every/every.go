// Package every runs a function periodically, for the background loops of the server and the
// cluster store (retention, lease renewal, owner polls).
package every

import (
	"context"
	"time"
)

// Tick calls fn every d until ctx ends; the first call is d after the start. It returns when ctx
// ends (after a call in progress has returned), so the goroutine that runs it can be waited for.
func Tick(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
