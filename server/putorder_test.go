package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// hookStore wraps a Store and, for its nth AppendAsync (from 1), can wait before the append,
// refuse it, or delay and fail its wait: the orderings a slow or failing disk or object store
// produce.
type hookStore struct {
	store.Store
	mu      sync.Mutex
	appends int
	hook    func(n int) appendHook
}

type appendHook struct {
	before    time.Duration // before the append
	appendErr error         // AppendAsync's error
	wait      time.Duration // before the wait returns
	waitErr   error         // the wait's error
}

func (s *hookStore) AppendAsync(ctx context.Context, stream string, meta store.FragmentMeta, data []byte) (func(context.Context) error, error) {
	s.mu.Lock()
	s.appends++
	h := s.hook(s.appends)
	s.mu.Unlock()
	time.Sleep(h.before)
	if h.appendErr != nil {
		return nil, h.appendErr
	}
	wait, err := s.Store.AppendAsync(ctx, stream, meta, data)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		err := wait(ctx)
		time.Sleep(h.wait)
		if err == nil {
			err = h.waitErr
		}
		return err
	}, nil
}

// orderedAcks sends n fragments of clip c and returns every ack until the response ends.
func orderedAcks(t *testing.T, e *mediaEnv, n int) []ackEvent {
	t.Helper()
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	body := c.header()
	for i := range n {
		body = append(body, c.cluster(t, i, baseMillis)...)
	}
	pc.writeAsync(body)
	var acks []ackEvent
	for {
		ev, ok := pc.next()
		if !ok {
			break
		}
		acks = append(acks, ev)
		if ev.EventType == ackError || len(acks) == 3*n {
			pc.pw.Close()
		}
	}
	return acks
}

// checkAckOrder requires what a producer relies on: final acks (PERSISTED, ERROR) in fragment
// order, at most one ERROR and nothing after it, the ERROR naming wantErr (a fragment's position
// in the upload, from 1), and a PERSISTED for each fragment before it and none after.
func checkAckOrder(t *testing.T, acks []ackEvent, wantErr, wantID int) {
	t.Helper()
	var lines []string
	pos := map[string]int{} // fragment number → position, from BUFFERING
	var persisted []int
	errAt := -1
	for i, a := range acks {
		lines = append(lines, fmt.Sprintf("%s %s %d", a.EventType, a.FragmentNumber, a.ErrorId))
		switch a.EventType {
		case ackBuffering:
			pos[a.FragmentNumber] = len(pos) + 1
		case ackPersisted:
			if errAt >= 0 {
				t.Errorf("PERSISTED after the ERROR")
			}
			persisted = append(persisted, pos[a.FragmentNumber])
		case ackError:
			if errAt >= 0 {
				t.Errorf("a second ERROR")
			}
			errAt = i
			if pos[a.FragmentNumber] != wantErr || a.ErrorId != wantID {
				t.Errorf("ERROR %d names fragment %d, want %d %d", a.ErrorId, pos[a.FragmentNumber], wantID, wantErr)
			}
		}
	}
	if errAt != len(acks)-1 {
		t.Errorf("the ERROR is not the last ack")
	}
	for i, p := range persisted {
		if p != i+1 || p >= wantErr {
			t.Errorf("PERSISTED for fragments %v, want 1 to %d in order", persisted, wantErr-1)
			break
		}
	}
	if len(persisted) != wantErr-1 {
		t.Errorf("PERSISTED for fragments %v, want 1 to %d", persisted, wantErr-1)
	}
	if t.Failed() {
		t.Logf("acks:\n%s", strings.Join(lines, "\n"))
	}
}

// An append that fails after a later one was written (a cluster batch's PUT timing out while the
// next batch commits): its ERROR must come before any PERSISTED of a later fragment, which the
// C producer would take as covering the failed one too. Before, fragment 3's PERSISTED went out
// first and the ERROR for 2 came last.
func TestPutMediaStoreFailureBeforeLaterPersisted(t *testing.T) {
	t.Parallel()
	st := &hookStore{Store: store.NewMem(), hook: func(n int) appendHook {
		if n == 2 {
			return appendHook{wait: 300 * time.Millisecond, waitErr: store.ErrUnavailable}
		}
		return appendHook{}
	}}
	checkAckOrder(t, orderedAcks(t, newMediaEnvStore(t, st), 4), 2, 5000)
}

// An append refused while an earlier fragment's wait is slow, with later fragments queued: one
// ERROR, last, naming the refused fragment, after the earlier fragment's PERSISTED. Before, the
// queued fragment got its own ERROR 5000 first, then the PERSISTED, then the ERROR 5001.
func TestPutMediaRefusedAppendWhileEarlierSyncs(t *testing.T) {
	t.Parallel()
	st := &hookStore{Store: store.NewMem(), hook: func(n int) appendHook {
		switch n {
		case 1:
			return appendHook{wait: 500 * time.Millisecond}
		case 2:
			return appendHook{before: 100 * time.Millisecond, appendErr: errors.New("write /data/seg: input/output error")}
		}
		return appendHook{}
	}}
	checkAckOrder(t, orderedAcks(t, newMediaEnvStore(t, st), 5), 2, 5001)
}

// The first append fails slowly while the parser goes on: one ERROR, last, naming fragment 1,
// and no final ack for the fragments after it. Before, the fragments queued behind it got ERRORs
// 5000 of their own ahead of it, one RECEIVED while the persister was behind got none, and
// BUFFERING went on after the failure.
func TestPutMediaFirstAppendFails(t *testing.T) {
	t.Parallel()
	st := &hookStore{Store: store.NewMem(), hook: func(n int) appendHook {
		if n == 1 {
			return appendHook{before: 500 * time.Millisecond, appendErr: errors.New("write /data/seg: input/output error")}
		}
		return appendHook{}
	}}
	checkAckOrder(t, orderedAcks(t, newMediaEnvStore(t, st), 5), 1, 5001)
}

// Fragments kept in the live cache while not yet durable leave it once durable, by the limits,
// without waiting for the stream's next upload. Before, an upload's last fragments stayed until
// the stream was written again.
func TestPutMediaCacheEvictsOnceDurable(t *testing.T) {
	t.Parallel()
	st := &hookStore{Store: store.NewMem(), hook: func(int) appendHook { return appendHook{wait: 150 * time.Millisecond} }}
	e := newMediaEnvStore(t, st)
	e.srv.media.archivedLimits = bufferLimits{MaxBytes: 1, MaxAge: 100 * time.Millisecond, Archived: true}
	e.createStream(t, "cam", 24)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	body := c.header()
	for i := range 4 {
		body = append(body, c.cluster(t, i, baseMillis)...)
	}
	pc.write(body)
	for range 4 {
		pc.expect(ackBuffering, 0)
		pc.expect(ackReceived, 0)
	}
	for range 4 {
		pc.expect(ackPersisted, 0)
	}
	pc.end()
	b := e.srv.media.buffer(store.Stream{Name: "cam", RetentionHours: 24})
	b.mu.Lock()
	n := len(b.frags)
	b.mu.Unlock()
	if n > 1 { // the newest always stays
		t.Errorf("the live cache holds %d fragments after all were durable, want the newest only (limits: 1 byte, 100 ms)", n)
	}
}
