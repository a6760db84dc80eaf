package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// An upload that sends nothing gets an IDLE ack every IdleAckInterval, not every other one: the
// IDLE itself is not "another ack". (It counted as one, so after each IDLE the next tick found
// an ack sent and skipped: IDLE came every 2 × IdleAckInterval, 6 s by default.) Run on the
// bubble's clock, over a net.Pipe connection, so the count is exact.
func TestPutMediaIdleEveryInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := store.NewMem()
		if err := st.CreateStream(context.Background(), store.Stream{Name: "cam", RetentionHours: 1}); err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Store: st, IdleAckInterval: time.Second, PutMediaReadTimeout: time.Hour, RetentionInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		lis := newPipeListener()
		hs := &http.Server{Handler: srv}
		served := make(chan struct{})
		go func() { defer close(served); _ = hs.Serve(lis) }()
		tr := &http.Transport{DialContext: lis.dial}
		pr, pw := io.Pipe()
		defer func() {
			pw.Close()
			tr.CloseIdleConnections()
			_ = hs.Close()
			<-served
			_ = srv.Close()
			_ = st.Close()
		}()

		req, err := http.NewRequest(http.MethodPost, "http://kvs/putMedia", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(hdrStreamName, "cam")
		req.Header.Set(hdrTimecodeType, "ABSOLUTE")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		idles := make(chan struct{}, 100)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				var ev ackEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.EventType != ackIdle {
					t.Errorf("ack %q, want IDLE", sc.Text())
					continue
				}
				idles <- struct{}{}
			}
		}()
		time.Sleep(10*time.Second + 500*time.Millisecond)
		synctest.Wait()
		if n := len(idles); n != 10 {
			t.Errorf("%d IDLE acks in 10.5 s of silence, want 10 (one every IdleAckInterval of 1 s)", n)
		}
	})
}
