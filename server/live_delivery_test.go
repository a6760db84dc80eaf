package server

import (
	"context"
	"testing"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// gatedStore holds every append until release is closed: AppendAsync returns, and its wait
// blocks, as if the fdatasync took that long.
type gatedStore struct {
	store.Store
	entered chan struct{} // one send per append that started
	release chan struct{}
}

func (g *gatedStore) AppendAsync(ctx context.Context, stream string, meta store.FragmentMeta, data []byte) (func(context.Context) error, error) {
	wait, err := g.Store.AppendAsync(ctx, stream, meta, data)
	if err != nil {
		return nil, err
	}
	g.entered <- struct{}{}
	return func(ctx context.Context) error {
		<-g.release
		return wait(ctx)
	}, nil
}

// TestGetMediaLiveBeforePersisted checks that a live GetMedia reader gets a fragment from the
// buffer while its append (the fsync) is still running, and that PERSISTED comes only after it.
func TestGetMediaLiveBeforePersisted(t *testing.T) {
	t.Parallel()
	g := &gatedStore{Store: store.NewMem(), entered: make(chan struct{}, 4), release: make(chan struct{})}
	e := newMediaEnvStore(t, g)
	e.createStream(t, "cam", 1)
	fromStore := make(chan bool, 4)
	e.srv.media.testDeliver = func(_ uint64, store bool) { fromStore <- store }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := e.getMedia(t, ctx, "cam", map[string]any{"StartSelectorType": "NOW"}, true)
	defer body.Close()
	got := make(chan *mkv.Fragment, 1)
	go func() {
		f, err := mkv.NewFragmentReader(body).Next()
		if err != nil {
			t.Errorf("live read: %v", err)
		}
		got <- f
	}()

	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	pc.write(c.cluster(t, 0, baseMillis))
	n, _ := parseFragmentNumber(pc.expect(ackBuffering, 0).FragmentNumber)
	pc.expect(ackReceived, n)
	<-g.entered // the append is running and cannot finish
	if s := <-fromStore; s {
		t.Error("delivered from the store, want the live buffer")
	}
	f := <-got
	if f == nil || len(f.Frames) != len(c.frags[0]) {
		t.Fatalf("live fragment %+v, want %d frames", f, len(c.frags[0]))
	}
	select {
	case ev := <-pc.acks:
		t.Fatalf("ack %+v before the append finished", ev)
	default:
	}
	close(g.release)
	pc.expect(ackPersisted, n)
	pc.end()
}
