package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// FuzzPutMediaBody feeds arbitrary bytes to PutMedia as its body (memory store) and
// checks: no panic; every ack line is JSON; every fragment acked PERSISTED is stored as a chunk
// that mkv reads back whole: one Cluster, and the acked number in its KVS fragment
// number tag. Seeds: a golden clip (known-size and unknown-size clusters) and the synthetic
// bench body.
func FuzzPutMediaBody(f *testing.F) {
	c := loadClip(f, "h264_aac.mkv")
	body := c.header()
	for i := range 3 {
		body = append(body, c.cluster(f, i, baseMillis)...)
	}
	f.Add(body)
	f.Add(append(c.header(), unknownSize(c.cluster(f, 0, baseMillis))...))
	syn := benchHeader() // the bench's frames, shrunk: the fuzzer is slow on large inputs
	for i := range 2 {
		tc := int64(baseMillis) + int64(i)*1000
		frames := benchFragment(nil, make([]byte, 300_000), tc)[:4]
		for k := range frames {
			frames[k].Data = frames[k].Data[:50]
		}
		var err error
		if syn, err = mkv.AppendCluster(syn, tc, frames); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(syn)
	st := store.NewMem()
	f.Cleanup(func() { st.Close() })
	srv, err := New(Config{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	call := func(t *testing.T, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	var streams atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte) {
		name := fmt.Sprintf("fz%d", streams.Add(1)) // a new stream each: a deleted one is gone only later
		if rec := call(t, "/createStream", `{"StreamName":"`+name+`","DataRetentionInHours":1}`); rec.Code != http.StatusOK {
			t.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/putMedia", bytes.NewReader(body))
		req.Header.Set(hdrStreamName, name)
		req.Header.Set(hdrTimecodeType, "ABSOLUTE")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		defer call(t, "/deleteStream", `{"StreamName":"`+name+`"}`) // the memory store keeps data till then
		sent := clusterFrames(body)
		for line := range strings.Lines(rec.Body.String()) {
			var ev ackEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("ack %q: %v", line, err)
			}
			if ev.EventType != ackPersisted {
				continue
			}
			n, err := parseFragmentNumber(ev.FragmentNumber)
			if err != nil {
				t.Fatalf("PERSISTED %q: %v", ev.FragmentNumber, err)
			}
			rc, _, err := st.Open(context.Background(), name, n)
			if err != nil {
				t.Fatalf("fragment %d: %v", n, err)
			}
			chunk, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			checkStoredChunk(t, chunk, ev.FragmentNumber)
			if in, ok := sent[*ev.FragmentTimecode]; ok {
				if got := clusterFrames(chunk)[*ev.FragmentTimecode]; got != in {
					t.Fatalf("fragment %d stores frames\n%s\nthe body's cluster at %d has\n%s", n, got, *ev.FragmentTimecode, in)
				}
			}
		}
	})
}

// clusterFrames renders the frames (track, timecode, keyframe flag, data) of each Cluster that
// mkv reads whole from in, by cluster timecode; a timecode that two Clusters share is left out.
func clusterFrames(in []byte) map[int64]string {
	out := map[int64]string{}
	twice := map[int64]bool{}
	rd := mkv.NewReader(bytes.NewReader(in))
	var b strings.Builder
	tc, open := int64(0), false
	end := func() {
		if open {
			if _, dup := out[tc]; dup {
				twice[tc] = true
			}
			out[tc] = b.String()
		}
		b.Reset()
		open = false
	}
	for {
		ev, err := rd.Next()
		if err != nil {
			break // a cluster cut short is not kept: the server stored none of it
		}
		switch ev.Kind {
		case mkv.EventCluster:
			end()
			tc, open = ev.Timecode, true
		case mkv.EventClusterEnd:
			end()
		case mkv.EventFrame:
			fmt.Fprintf(&b, "%d@%d k%v %x\n", ev.Frame.Track, ev.Frame.Timecode, ev.Frame.Keyframe, ev.Frame.Data)
		}
	}
	for tc := range twice {
		delete(out, tc)
	}
	return out
}

// checkStoredChunk reads a stored chunk back: one document with one Cluster, and the fragment
// number tag.
func checkStoredChunk(t *testing.T, chunk []byte, number string) {
	t.Helper()
	rd := mkv.NewReader(bytes.NewReader(chunk))
	clusters := 0
	var tagged bool
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stored chunk %s: %v", number, err)
		}
		switch ev.Kind {
		case mkv.EventCluster:
			clusters++
		case mkv.EventTags:
			for _, tag := range ev.Tags {
				for _, st := range tag.SimpleTags {
					if st.Name == mkv.TagFragmentNumber {
						tagged = st.Value == number
					}
				}
			}
		}
	}
	if clusters != 1 || !tagged { // a Cluster without frames is stored too (4011 is not enforced)
		t.Fatalf("stored chunk %s: %d clusters, number tag right: %v", number, clusters, tagged)
	}
}
