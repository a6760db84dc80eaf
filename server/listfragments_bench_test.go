package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// BenchmarkListFragments asks ListFragments, through the HTTP handler over loopback, for 1000
// fragments by server or producer time range at a varying place in a stream of 1 M fragments in an
// FS store (budget: 20 ms). The store is built by store.TestMakeBigIndex:
//
//	KVS_BIG_INDEX_DIR=/tmp/kvs-big go test -run TestMakeBigIndex ./server/store/
//	KVS_BIG_INDEX_DIR=/tmp/kvs-big go test -run '^$' -bench ListFragments ./server/
func BenchmarkListFragments(b *testing.B) {
	dir := os.Getenv("KVS_BIG_INDEX_DIR")
	if dir == "" {
		b.Skip("set KVS_BIG_INDEX_DIR (see the doc comment)")
	}
	st, err := store.OpenFS(dir, store.FSOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := newMediaEnvStore(b, st)
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	const total = 1_000_000
	for _, kind := range []string{"SERVER_TIMESTAMP", "PRODUCER_TIMESTAMP"} {
		b.Run(kind, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % (total - 1000)
				start := base.Add(time.Duration(i) * time.Second)
				if kind == "PRODUCER_TIMESTAMP" {
					start = start.Add(-2 * time.Second)
				}
				body := fmt.Sprintf(`{"StreamName":"big","MaxResults":1000,"FragmentSelector":{"FragmentSelectorType":%q,`+
					`"TimestampRange":{"StartTimestamp":%d,"EndTimestamp":%d}}}`, kind, start.Unix(), start.Add(time.Hour).Unix())
				resp, err := http.Post(e.ts.URL+"/listFragments", "application/json", bytes.NewReader([]byte(body)))
				if err != nil {
					b.Fatal(err)
				}
				var out struct {
					Fragments []json.RawMessage
					NextToken string
				}
				err = json.NewDecoder(resp.Body).Decode(&out)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || len(out.Fragments) != 1000 {
					b.Fatalf("status %d, %d fragments, %v", resp.StatusCode, len(out.Fragments), err)
				}
			}
		})
	}
}
