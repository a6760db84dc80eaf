package server

import (
	"context"
	"io"
	"slices"
	"testing"

	"github.com/openkvs/kvs/server/store"
)

// pauseDeleteStore pauses DeleteStream after the store has deleted the stream, until resume
// closes: the moment between the store's delete and the server's streamDeleted, where another
// client may create the stream again and start an upload.
type pauseDeleteStore struct {
	store.Store
	deleted chan struct{}
	resume  chan struct{}
}

func (s *pauseDeleteStore) DeleteStream(ctx context.Context, name, version string) error {
	err := s.Store.DeleteStream(ctx, name, version)
	if err == nil && s.deleted != nil {
		close(s.deleted)
		<-s.resume
	}
	return err
}

// recreatedDuringDelete deletes stream "cam" of a new server, and between the store's delete and
// the server's after-effects creates "cam" again and uploads one fragment of h264.mkv to it: the
// server, the clip and the upload, still open.
func recreatedDuringDelete(t *testing.T) (*mediaEnv, *clip, *putConn) {
	t.Helper()
	st := &pauseDeleteStore{Store: store.NewMem()}
	e := newMediaEnvStore(t, st)
	arn := e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	st.deleted, st.resume = make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp := e.post(t, context.Background(), "/deleteStream", map[string]any{"StreamARN": arn})
		resp.Body.Close()
	}()
	<-st.deleted
	// Another client creates "cam" again and starts uploading to it.
	e.createStream(t, "cam", 1)
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	close(st.resume)
	<-done
	return e, c, pc
}

// TestDeleteLeavesRecreatedStreamUpload: a DeleteStream's after-effects (ending the
// stream's uploads and live readers, dropping its live buffer) are applied by name after the
// store's delete, not atomically with it: an upload to a stream created again under the same
// name in between is ended with ERROR 4008 although its stream exists.
func TestDeleteLeavesRecreatedStreamUpload(t *testing.T) {
	t.Parallel()
	e, c, pc := recreatedDuringDelete(t)

	// The new stream exists, and its upload goes on.
	var desc struct{ StreamInfo struct{ StreamARN string } }
	e.call(t, "/describeStream", map[string]any{"StreamName": "cam"}, &desc)
	pc.write(c.cluster(t, 1, baseMillis))
	for {
		ev, ok := pc.next()
		if !ok {
			t.Fatal("the new stream's upload ended without PERSISTED for its second fragment")
		}
		if ev.EventType == ackError {
			t.Fatalf("the new stream's upload (stream %s exists) ended with ERROR %d %s after the old stream's DeleteStream", desc.StreamInfo.StreamARN, ev.ErrorId, ev.ErrorCode)
		}
		if ev.EventType == ackPersisted {
			break
		}
	}
	pc.end()
}

// TestRecreatedStreamOldFragmentNumbers: fragment numbers and continuation tokens a client
// kept from a stream name the fragments of that stream only. After DeleteStream and
// CreateStream under the same name (another stream, with another ARN, as in KVS), a
// consumer that reconnects by name with its last continuation token must not skip the new
// stream's first fragments, and GetMediaForFragmentList of an old number must not answer with
// a new fragment's data.
//
// Every store hands out a number once per stream name, across deletes (store.Store.NextNumber),
// so the new stream's numbers all follow the deleted one's.
func TestRecreatedStreamOldFragmentNumbers(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"mem", "fs"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newMediaEnv(t, kind)
			c := loadClip(t, "h264.mkv")
			arn := e.createStream(t, "cam", 1)
			e.ingest(t, "cam", c, 0, 3)
			old := e.listNumbers(t, "cam") // as the server hands them out
			token := old[2]                // the last chunk's CONTINUATION_TOKEN
			e.deleteStream(t, arn)
			e.createStream(t, "cam", 1)
			fresh := e.ingest(t, "cam", c, 0, 5)
			if now := e.listNumbers(t, "cam"); len(now) != 5 || now[0] <= old[2] {
				t.Errorf("the new stream lists %v, the deleted one listed %v: want 5 numbers after all of those", now, old)
			}

			body := e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": token}, false)
			got := fragmentNumbers(t, readFragments(t, body))
			body.Close()
			if !slices.Equal(got, fresh) {
				t.Errorf("GetMedia by name with the deleted stream's continuation token %s: fragments %v, want all of the new stream's %v", token, got, fresh)
			}

			resp := e.post(t, t.Context(), "/getMediaForFragmentList", map[string]any{"StreamName": "cam", "Fragments": []string{old[0]}})
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || resp.Header.Get("x-amzn-ErrorType") != codeResourceNotFound {
				t.Errorf("GetMediaForFragmentList of the deleted stream's fragment %s: %d %s (%d bytes), want 404 %s", old[0], resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), len(b), codeResourceNotFound)
			}
			resp = e.post(t, t.Context(), "/getMedia", map[string]any{"StreamName": "cam", "StartSelector": map[string]any{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": old[1]}})
			resp.Body.Close() // a 200 would follow the stream live: not read
			if resp.StatusCode != 404 || resp.Header.Get("x-amzn-ErrorType") != codeResourceNotFound {
				t.Errorf("GetMedia FRAGMENT_NUMBER of the deleted stream's fragment %s: %d %s, want 404 %s", old[1], resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), codeResourceNotFound)
			}

			// The new stream's own tokens resume after their fragment.
			body = e.getMedia(t, t.Context(), "cam", map[string]any{"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": formatFragmentNumber(fresh[1])}, false)
			got = fragmentNumbers(t, readFragments(t, body))
			body.Close()
			if !slices.Equal(got, fresh[2:]) {
				t.Errorf("GetMedia with the new stream's token of %d: fragments %v, want %v", fresh[1], got, fresh[2:])
			}
		})
	}
}
