package store

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// TestFSFailedSyncFailsTheSegment: once an fdatasync of a segment fails, an append written to
// that segment before the failure is not acknowledged even when its own fdatasync returns nil
// (Linux reports a failed writeback to one fsync; the lost pages are clean afterwards, so a later
// or concurrent fsync has nothing to write), and the next append goes to a new segment and
// succeeds. The second append's fdatasync runs beside the failing one, or after it ended.
func TestFSFailedSyncFailsTheSegment(t *testing.T) {
	t.Parallel()
	for _, after := range []bool{false, true} {
		t.Run(map[bool]string{false: "beside", true: "after"}[after], func(t *testing.T) {
			t.Parallel()
			testFailedSync(t, after)
		})
	}
}

func testFailedSync(t *testing.T, after bool) {
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	t.Cleanup(func() { s.Close() })
	mustCreate(t, s, "cam", 24)
	cam, _, err := s.lookup("cam")
	if err != nil {
		t.Fatal(err)
	}
	// The first fdatasync waits for release, then fails (an I/O error); the others are real
	// (with after, they begin once the first has failed).
	started, release, failed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	var once sync.Once
	var syncs sync.Map // file name → fdatasyncs
	s.syncData = func(f *os.File) error {
		if !strings.HasPrefix(f.Name(), cam.dir+string(os.PathSeparator)) {
			return fsync.Data(f)
		}
		n, _ := syncs.LoadOrStore(f.Name(), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		first := false
		once.Do(func() { first = true })
		if first {
			close(started)
			<-release
			defer close(failed)
			return errors.New("input/output error")
		}
		if after {
			<-failed
		}
		return fsync.Data(f)
	}
	ctx := context.Background()
	appendAsync := func() (uint64, <-chan error) {
		n, err := s.NextNumber(ctx, "cam")
		if err != nil {
			t.Fatal(err)
		}
		wait, err := s.AppendAsync(ctx, "cam", FragmentMeta{Number: n, ServerTime: time.Now(), ProducerTime: time.Now()},
			payload("cam", n, 1000))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- wait(ctx) }()
		return n, done
	}
	_, first := appendAsync()
	<-started
	_, second := appendAsync() // written to the same segment, synced in a later batch
	time.Sleep(50 * time.Millisecond)
	unblock()
	if err := <-first; err == nil {
		t.Fatal("the append whose fdatasync failed returned nil")
	}
	if err := <-second; err == nil {
		t.Fatal("an append written to the segment before its fdatasync failed returned nil")
	}
	third, done := appendAsync()
	if err := <-done; err != nil {
		t.Fatalf("the append after the failure: %v", err)
	}
	got, err := s.TimeRange(ctx, "cam", ServerTime, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), Cursor{}, 10)
	if err != nil || len(got) != 1 || got[0].Number != third {
		t.Errorf("fragments %v (%v), want only %d: the failed appends are not indexed", numbers(got), err, third)
	}
	files := 0
	syncs.Range(func(any, any) bool { files++; return true })
	if files != 2 {
		t.Errorf("fdatasyncs of %d segment files, want 2 (the third append rolls to a new segment)", files)
	}
}

var errDeletedEarly = errors.New("returned before Close")

// TestFSDeleteStreamDuringClose: a DeleteStream that waits to queue its segment's close (the
// commit queue is full: the disk is slow) while the store closes (a server shutting down after
// its grace period) returns, and Close waits for it. Close used to close the queue under it:
// the process panicked (send on closed channel).
func TestFSDeleteStreamDuringClose(t *testing.T) {
	t.Parallel()
	s := mustOpenFS(t, t.TempDir(), FSOptions{})
	mustCreate(t, s, "cam", 24)
	release := make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	s.syncData = func(f *os.File) error {
		<-release
		return fsync.Data(f)
	}
	ctx := context.Background()
	// Appends until the queue is full: the fdatasyncs hold the batches taken from it.
	for len(s.queue) < cap(s.queue) {
		n, err := s.NextNumber(ctx, "cam")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendAsync(ctx, "cam", FragmentMeta{Number: n, ServerTime: time.Now()}, payload("cam", n, 10)); err != nil {
			t.Fatal(err)
		}
	}
	st, _, err := s.lookup("cam")
	if err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteStream(ctx, "cam", "") }()
	// Wait until DeleteStream holds the stream (it is sealing the segment: the queue is full).
	// The commit loop may have taken a request off the queue meanwhile, letting DeleteStream
	// through: then Close meets no waiting sender, and the run checks only that nothing fails.
	var early error
	waited := false
	for deadline := time.Now().Add(10 * time.Second); !waited && early == nil; time.Sleep(time.Millisecond) {
		select {
		case err := <-deleted:
			early = err
			if early == nil {
				early = errDeletedEarly
			}
			continue
		default:
		}
		if _, _, err := s.lookup("cam"); errors.Is(err, ErrStreamNotFound) {
			if !st.mu.TryLock() {
				waited = true
				continue
			}
			st.mu.Unlock()
		}
		if time.Now().After(deadline) {
			t.Fatal("DeleteStream neither returned nor held the stream within 10 s")
		}
	}
	if early != nil {
		t.Logf("DeleteStream did not wait on the queue this run (%v)", early)
		deleted <- early
	}
	time.Sleep(50 * time.Millisecond) // from holding the stream to waiting on the queue
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(50 * time.Millisecond) // let Close start
	unblock()
	if err := <-deleted; err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, errDeletedEarly) {
		t.Errorf("DeleteStream: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
