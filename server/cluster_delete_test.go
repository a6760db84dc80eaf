package server

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/cluster"
)

// TestClusterDeleteOnOtherNode: a live reader on node 2 (which does not write "cam") must
// end with STREAM_DELETED when node 1 deletes the stream, and a reader on node 2 of a stream
// re-created under the same name must get the new stream's fragments.
func TestClusterDeleteOnOtherNode(t *testing.T) {
	t.Parallel()
	nodes := newCluster(t, 2, nil, nil)
	n1, n2 := nodes[0], nodes[1]
	arn := n1.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := n1.startPut(t, "cam")
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := n2.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	fr := mkv.NewFragmentReader(body)
	var old []uint64
	for i := 1; i <= 3; i++ {
		old = append(old, pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true))
	}
	for range old {
		if _, err := fr.Next(); err != nil {
			t.Fatalf("old reader: %v", err)
		}
	}
	pc.end()
	n1.deleteStream(t, arn)

	// 1. The reader on node 2 is told the stream is gone.
	ended := make(chan string, 1)
	go func() {
		f, err := fr.Next()
		if err != nil {
			ended <- "read error: " + err.Error()
			return
		}
		code, _ := f.Tag(mkv.TagErrorCode)
		ended <- "chunk with ERROR_CODE " + code
	}()
	select {
	case got := <-ended:
		if got != "chunk with ERROR_CODE STREAM_DELETED" {
			t.Errorf("reader on node 2 after the delete on node 1: %s, want a STREAM_DELETED chunk", got)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("reader on node 2: no STREAM_DELETED within 10 s of the delete on node 1")
	}
	cancel()

	// 2. The stream is created again; a reader on node 2 gets the new stream's fragments.
	n1.createStream(t, "cam", 1)
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	got := liveNumbers(t, n2.getMedia(t, ctx2, "cam", map[string]any{"StartSelectorType": "NOW"}, true), 2)
	pc2 := n1.startPut(t, "cam")
	pc2.write(c.header())
	var want []uint64
	for i := 0; i < 2; i++ {
		want = append(want, pc2.fragment(c.cluster(t, i, baseMillis+60_000), c.fragTimecode(i, baseMillis+60_000), true))
	}
	select {
	case g := <-got:
		if !slices.Equal(g, want) {
			t.Errorf("reader on node 2 of the re-created stream got %v, want %v (old stream's were %v)", g, want, old)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("reader on node 2 of the re-created stream: nothing within 10 s (want %v; old stream's numbers were %v)", want, old)
	}
	pc2.end()
}

// TestClusterDecreaseWhileCleanupRuns: UpdateDataRetention DECREASE promises that the
// fragments older than the new window are gone when it answers. On a cluster its purge is
// EnforceRetention, which returned 0 at once when another node held the cleanup lock (its
// periodic pass, which had read the old retention): the decrease answered 200 and the expired
// fragments stayed listed until a later pass. Now it waits for the other pass, then runs.
func TestClusterDecreaseWhileCleanupRuns(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	var dsn string
	nodes := newCluster(t, 1, func(c *cluster.Config) { dsn = c.Index },
		func(c *Config) { c.Now = func() time.Time { return time.Unix(0, now.Load()) } })
	n1 := nodes[0]
	n1.createStream(t, "cam", 3)
	c := loadClip(t, "h264.mkv")
	pc := n1.startPut(t, "cam")
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	pc.end()
	now.Add(int64(2 * time.Hour)) // the fragment is 2 h old

	// Another node's retention pass is running: it holds the cluster's cleanup lock.
	ctx := t.Context()
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, 0x6b76735f); err != nil {
		t.Fatal(err)
	}
	var desc struct{ StreamInfo struct{ Version string } }
	n1.call(t, "/describeStream", map[string]any{"StreamName": "cam"}, &desc)
	decreased := make(chan struct{})
	go func() {
		defer close(decreased)
		n1.call(t, "/updateDataRetention", map[string]any{"StreamName": "cam", "CurrentVersion": desc.StreamInfo.Version,
			"Operation": "DECREASE_DATA_RETENTION", "DataRetentionChangeInHours": 2}, nil) // 3 h -> 1 h
	}()
	// The other pass ends once the decrease's purge waits for it (or the decrease answered).
	for waiting := 0; waiting == 0; {
		select {
		case <-decreased:
			waiting = -1
		case <-time.After(20 * time.Millisecond):
			if err := other.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = tx.Rollback(ctx)
	<-decreased

	var list struct {
		Fragments []struct{ FragmentNumber string }
	}
	n1.call(t, "/listFragments", map[string]any{"StreamName": "cam"}, &list)
	if len(list.Fragments) != 0 {
		t.Fatalf("after DECREASE to 1 h, a 2 h old fragment is still listed: %+v", list.Fragments)
	}
}
