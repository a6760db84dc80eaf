package store

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/fsync"
)

// TestFSSlowSyncHoldsOnlyItsStream: an fdatasync that does not end (a disk's tail, on one
// stream's segment) holds that stream's appends, in their order, and no other stream's: the
// group commit does not make every stream wait for the slowest file of a batch.
func TestFSSlowSyncHoldsOnlyItsStream(t *testing.T) {
	t.Parallel()
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	t.Cleanup(func() { s.Close() })
	mustCreate(t, s, "slow", 24)
	mustCreate(t, s, "fast", 24)
	slow, _, err := s.lookup("slow")
	if err != nil {
		t.Fatal(err)
	}
	// The first fdatasync of slow's segment waits for release; the others go through.
	started, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the Close above, which waits for the fdatasyncs
	var once sync.Once
	s.syncData = func(f *os.File) error {
		if strings.HasPrefix(f.Name(), slow.dir+string(os.PathSeparator)) {
			first := false
			once.Do(func() { first = true })
			if first {
				close(started)
				<-release
			}
		}
		return fsync.Data(f)
	}
	ctx := context.Background()
	appendAsync := func(stream string) <-chan error {
		n, err := s.NextNumber(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		wait, err := s.AppendAsync(ctx, stream, FragmentMeta{Number: n, ServerTime: time.Now(), ProducerTime: time.Now()},
			payload(stream, n, 1000))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- wait(ctx) }()
		return done
	}
	slow1 := appendAsync("slow")
	<-started
	fast1 := appendAsync("fast")
	select {
	case err := <-fast1:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fast's append waited for slow's fdatasync")
	}
	// slow's second append syncs (its fdatasync goes through) but must not be durable before its
	// first: it waits.
	slow2 := appendAsync("slow")
	fast2 := appendAsync("fast")
	if err := <-fast2; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slow1:
		t.Fatalf("slow's first append returned (%v) while its fdatasync had not", err)
	case err := <-slow2:
		t.Fatalf("slow's second append returned (%v) before its first", err)
	case <-time.After(200 * time.Millisecond):
	}
	unblock()
	for i, done := range []<-chan error{slow1, slow2} {
		if err := <-done; err != nil {
			t.Fatalf("slow's append %d: %v", i+1, err)
		}
	}
	for _, stream := range []string{"slow", "fast"} {
		got, err := s.TimeRange(ctx, stream, ServerTime, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), Cursor{}, 10)
		if err != nil || len(got) != 2 || got[0].Number >= got[1].Number {
			t.Errorf("%s: fragments %v (%v), want its two in number order", stream, numbers(got), err)
		}
	}
}
