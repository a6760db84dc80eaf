package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/server/store"
)

// TestRetentionLoop: the Server runs Store.EnforceRetention every RetentionInterval as of its
// clock, logs what went, and stops with Close (synctest fails the test if the loop outlives it).
func TestRetentionLoop(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		st := store.NewMem()
		defer st.Close()
		start := time.Now() // the bubble's clock, which the Server's default Now reads too
		for _, s := range []store.Stream{{Name: "short", RetentionHours: 1}, {Name: "long", RetentionHours: 24}} {
			if err := st.CreateStream(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		appendAt := func(stream string, ts time.Time) uint64 {
			n, err := st.NextNumber(ctx, stream)
			if err == nil {
				err = store.Append(ctx, st, stream, store.FragmentMeta{Number: n, ServerTime: ts, ProducerTime: ts}, []byte("x"))
			}
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		appendAt("short", start.Add(-time.Minute))
		appendAt("short", start.Add(29*time.Minute))
		appendAt("long", start.Add(-time.Minute))
		var logs syncBuffer
		srv, err := New(Config{Store: st, RetentionInterval: 10 * time.Minute, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		count := func(stream string) int {
			ms, err := st.Range(ctx, stream, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			return len(ms)
		}

		time.Sleep(time.Hour - time.Second) // passes at 10, 20, ..., 50 min: nothing is an hour old
		synctest.Wait()
		if count("short") != 2 || strings.Contains(logs.String(), `"msg":"retention"`) {
			t.Fatalf("before an hour: %d fragments left, logs %s", count("short"), logs.String())
		}
		time.Sleep(time.Second + time.Minute) // the pass at 60 min: the first fragment is over an hour old
		synctest.Wait()
		if count("short") != 1 || count("long") != 1 {
			t.Fatalf("after the 60 min pass: short %d, long %d fragments; want 1, 1", count("short"), count("long"))
		}
		var line map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err == nil && m["msg"] == "retention" {
				line = m
				break
			}
		}
		if line["fragments_deleted"] != float64(1) || line["level"] != "INFO" {
			t.Fatalf("retention log: %v (all: %s)", line, logs.String())
		}
		time.Sleep(30 * time.Minute) // the pass at 90 min: the second one goes too
		synctest.Wait()
		if count("short") != 0 {
			t.Fatalf("after 90 min: short keeps %d fragments", count("short"))
		}

		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		appendAt("short", start) // expired, but nobody runs retention any more
		time.Sleep(time.Hour)
		synctest.Wait()
		if count("short") != 1 {
			t.Fatal("retention ran after Close")
		}
	})
}

// A negative RetentionInterval starts no loop.
func TestRetentionLoopOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		st := store.NewMem()
		defer st.Close()
		if err := st.CreateStream(ctx, store.Stream{Name: "s", RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
		n, _ := st.NextNumber(ctx, "s")
		if err := store.Append(ctx, st, "s", store.FragmentMeta{Number: n, ServerTime: time.Now()}, []byte("x")); err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Store: st, RetentionInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if ms, _ := st.Range(ctx, "s", 0, 0); len(ms) != 1 {
			t.Fatalf("%d fragments left, want the expired one kept", len(ms))
		}
	})
}

// endlessPurgeStore's EnforceRetention is a purge that outlasts any caller (tens of millions of
// fragments): it returns when its context ends, with that context's error, sent on ended.
type endlessPurgeStore struct {
	store.Store
	ended chan error
}

func (s *endlessPurgeStore) EnforceRetention(ctx context.Context, _ time.Time) (int, error) {
	<-ctx.Done()
	s.ended <- ctx.Err()
	return 0, ctx.Err()
}

// TestDecreaseAnswersDuringLongPurge: an UpdateDataRetention decrease purges before it answers
// for a bounded time only, then answers with the change made: a purge of minutes kept the answer
// past the AWS CLI's 60 s, whose retry then failed with VersionMismatchException although the
// change was made.
func TestDecreaseAnswersDuringLongPurge(t *testing.T) {
	t.Parallel()
	ended := make(chan error, 1)
	e := newControlEnv(t, func(c *Config) { c.Store = &endlessPurgeStore{Store: c.Store, ended: ended} })
	e.srv.purgeWait = 50 * time.Millisecond
	e.create(t, "s", func(in *kinesisvideo.CreateStreamInput) { in.DataRetentionInHours = aws.Int32(24) })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := e.kv.UpdateDataRetention(ctx, &kinesisvideo.UpdateDataRetentionInput{StreamName: aws.String("s"),
		CurrentVersion: e.describe(t, "s").Version, Operation: types.UpdateDataRetentionOperationDecreaseDataRetention,
		DataRetentionChangeInHours: aws.Int32(23)})
	if err != nil {
		t.Fatalf("a decrease whose purge does not end: %v; want an answer once the purge's time is up", err)
	}
	if err := <-ended; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the purge ended with %v, want its deadline", err)
	}
	if si := e.describe(t, "s"); aws.ToInt32(si.DataRetentionInHours) != 1 {
		t.Errorf("retention = %d, want 1", aws.ToInt32(si.DataRetentionInHours))
	}
}
