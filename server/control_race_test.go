package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/server/store"
)

// Control-plane changes that read then write are atomic in the store (UpdateStream's fn,
// DeleteStream's version check), not under a server lock. These tests put another request
// between a handler's lookup and its write.

// interleavingStore is a Mem store that runs a hook right after GetStream returns, which is
// where a concurrent request would come between a handler's lookup and its write: once, or
// (repeat) after every GetStream.
type interleavingStore struct {
	store.Store
	mu     sync.Mutex
	hook   func()
	repeat bool
}

func (s *interleavingStore) after(repeat bool, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook, s.repeat = fn, repeat
}

func (s *interleavingStore) GetStream(ctx context.Context, name string) (store.Stream, error) {
	st, err := s.Store.GetStream(ctx, name)
	s.mu.Lock()
	fn := s.hook
	if !s.repeat {
		s.hook = nil
	}
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
	return st, err
}

func newInterleavingEnv(t *testing.T) (*controlEnv, *interleavingStore) {
	inner := store.NewMem()
	t.Cleanup(func() { inner.Close() })
	is := &interleavingStore{Store: inner}
	now := time.UnixMilli(1_700_000_000_000)
	var mu sync.Mutex
	e := newControlEnv(t, func(c *Config) {
		c.Store = is
		c.Now = func() time.Time { // a new millisecond per call: a re-created stream gets a new ARN
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Millisecond)
			return now
		}
	})
	return e, is
}

func TestDeleteStreamInterleaved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name         string
		recreate     bool // the interleaved request deletes and re-creates the stream, else updates it
		withVersion  bool // the delete names the version it saw
		wantDeleted  bool
		wantNotFound bool
	}{
		{"update, delete without version", false, false, true, false},
		{"update, delete with the old version", false, true, false, false},
		{"re-created, delete by the old ARN", true, false, false, true},
		{"re-created, delete by the old ARN and version", true, true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, is := newInterleavingEnv(t)
			arn := e.create(t, "s")
			v := aws.ToString(e.describe(t, "s").Version)
			var newARN string
			var hookErr error
			is.after(false, func() {
				if tc.recreate {
					if _, hookErr = e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn)}); hookErr != nil {
						return
					}
					out, err := e.kv.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("s")})
					hookErr, newARN = err, aws.ToString(out.StreamARN)
					return
				}
				_, hookErr = e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamName: aws.String("s"),
					CurrentVersion: aws.String(v), DeviceName: aws.String("moved")})
			})
			in := &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn)}
			if tc.withVersion {
				in.CurrentVersion = aws.String(v)
			}
			_, err := e.kv.DeleteStream(ctx, in)
			if hookErr != nil {
				t.Fatalf("interleaved request: %v", hookErr)
			}
			switch {
			case tc.wantDeleted:
				if err != nil {
					t.Fatalf("delete: %v", err)
				}
				_, err := e.kv.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("s")})
				wantAPIError[*types.ResourceNotFoundException](t, err)
				return
			case tc.wantNotFound:
				wantAPIError[*types.ResourceNotFoundException](t, err)
			default:
				wantAPIError[*types.VersionMismatchException](t, err)
			}
			info := e.describe(t, "s") // what the interleaved request made is still there
			if tc.recreate && aws.ToString(info.StreamARN) != newARN {
				t.Fatalf("stream %s, want the re-created %s", aws.ToString(info.StreamARN), newARN)
			}
			if !tc.recreate && aws.ToString(info.DeviceName) != "moved" {
				t.Fatalf("device %q: the update was lost", aws.ToString(info.DeviceName))
			}
		})
	}
}

// A stream whose version changes after every lookup cannot be deleted; after a few attempts the
// answer is the store's ErrVersionMismatch, which the client sees as VersionMismatchException.
func TestDeleteStreamKeepsChanging(t *testing.T) {
	t.Parallel()
	e, is := newInterleavingEnv(t)
	arn := e.create(t, "s")
	n := 0
	is.after(true, func() {
		n++
		if _, err := is.Store.UpdateStream(context.Background(), "s", func(s *store.Stream) error {
			s.Version = fmt.Sprintf("v%d", n)
			return nil
		}); err != nil {
			t.Errorf("interleaved update: %v", err)
		}
	})
	_, err := e.kv.DeleteStream(t.Context(), &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn)})
	wantAPIError[*types.VersionMismatchException](t, err)
	is.after(false, nil)
	if n != maxDeleteAttempts {
		t.Fatalf("%d lookups, want %d attempts", n, maxDeleteAttempts)
	}
	var vm *types.VersionMismatchException
	if errors.As(err, &vm) && aws.ToString(vm.Message) != msgVersionMismatch {
		t.Errorf("message %q, want %q", aws.ToString(vm.Message), msgVersionMismatch)
	}
	e.describe(t, "s")
	ae, ok := toAPIError(fmt.Errorf("delete stream s: %w", store.ErrVersionMismatch))
	if !ok || ae.Code != codeVersionMismatch || ae.HTTPStatus() != http.StatusBadRequest || ae.Message == "" {
		t.Fatalf("toAPIError(ErrVersionMismatch) = %+v, %v", ae, ok)
	}
}

// Concurrent UpdateStream, DeleteStream and TagStream on one stream with the same
// CurrentVersion: exactly one of the update and the delete wins, and tags are never lost to an
// update.
func TestControlConcurrent(t *testing.T) {
	t.Parallel()
	e := newControlEnv(t)
	ctx := t.Context()
	for round := range 10 {
		name := fmt.Sprintf("s%d", round)
		arn := e.create(t, name)
		v := aws.String(aws.ToString(e.describe(t, name).Version))
		var wg sync.WaitGroup
		var updateErr, deleteErr error
		wg.Go(func() {
			_, updateErr = e.kv.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{StreamARN: aws.String(arn), CurrentVersion: v, MediaType: aws.String("video/h264")})
		})
		wg.Go(func() {
			_, deleteErr = e.kv.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn), CurrentVersion: v})
		})
		for i := range 4 {
			wg.Go(func() {
				// Fails with ResourceNotFoundException once the delete has won.
				_, _ = e.kv.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamARN: aws.String(arn), Tags: map[string]string{fmt.Sprint("k", i): "v"}})
			})
		}
		wg.Wait()
		if (updateErr == nil) == (deleteErr == nil) {
			t.Fatalf("round %d: update %v, delete %v; want exactly one to succeed", round, updateErr, deleteErr)
		}
		if updateErr == nil {
			wantAPIError[*types.VersionMismatchException](t, deleteErr)
			info := e.describe(t, name)
			tags, err := e.kv.ListTagsForStream(ctx, &kinesisvideo.ListTagsForStreamInput{StreamName: aws.String(name)})
			if err != nil || len(tags.Tags) != 4 || aws.ToString(info.MediaType) != "video/h264" {
				t.Fatalf("round %d: media type %q, tags %v, %v", round, aws.ToString(info.MediaType), tags, err)
			}
		} else {
			wantAPIError[*types.ResourceNotFoundException](t, updateErr)
		}
	}
}
