package server

import (
	"context"
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
