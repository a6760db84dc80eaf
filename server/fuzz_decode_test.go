package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// decodeSeeds are request bodies for FuzzDecodeRequests, by path: valid ones, and the shapes the
// hostile table sends (wrong types, missing members, odd selectors).
var decodeSeeds = map[string][]string{
	"/createStream": {`{"StreamName":"new","DataRetentionInHours":2,"Tags":{"a":"b"}}`, `{"StreamName":5}`, `{"StreamName":"../x"}`, `{"DataRetentionInHours":1e300}`},
	"/describeStream": {`{"StreamName":"cam"}`, `{"StreamARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1"}`, `[]`,
		`{"streamName":"cam"}`, `{"StreamName":"x","streamname":"cam"}`, `{"\u0073treamName":"cam"}`, `{"ſtreamName":"cam"}`,
		`{"Tags":{"a":[{"b":1}]},"streamName":"x","StreamName":"cam"}`},
	"/listStreams":         {`{"MaxResults":1}`, `{"NextToken":"Y2Ft"}`, `{"StreamNameCondition":{"ComparisonOperator":"BEGINS_WITH","ComparisonValue":"c"}}`},
	"/deleteStream":        {`{"StreamARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1"}`, `{}`},
	"/updateStream":        {`{"StreamName":"cam","CurrentVersion":"x","MediaType":"video/h264"}`},
	"/updateDataRetention": {`{"StreamName":"cam","CurrentVersion":"x","Operation":"INCREASE_DATA_RETENTION","DataRetentionChangeInHours":1}`},
	"/getDataEndpoint":     {`{"StreamName":"cam","APIName":"GET_MEDIA"}`, `{"APIName":7}`},
	"/tagStream":           {`{"StreamName":"cam","Tags":{"k":"v"}}`},
	"/untagStream":         {`{"StreamName":"cam","TagKeyList":["k"]}`},
	"/listTagsForStream":   {`{"StreamName":"cam"}`},
	"/TagResource":         {`{"ResourceARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1","Tags":[{"Key":"k","Value":"v"}]}`},
	"/UntagResource":       {`{"ResourceARN":"x","TagKeyList":["k"]}`},
	"/ListTagsForResource": {`{"ResourceARN":"x"}`},
	"/getMedia": {`{"StreamName":"cam","StartSelector":{"StartSelectorType":"EARLIEST"}}`,
		`{"StreamName":"cam","StartSelector":{"StartSelectorType":"FRAGMENT_NUMBER","AfterFragmentNumber":"91343852333181432392682062607743920146159169393"}}`,
		`{"StreamName":"cam","StartSelector":{"StartSelectorType":"SERVER_TIMESTAMP","StartTimestamp":1.8e9}}`,
		`{"StreamName":"cam","StartSelector":{"StartSelectorType":"CONTINUATION_TOKEN","ContinuationToken":"0"}}`,
		`{"StreamName":"cam","StartSelector":{"StartSelectorType":"LATEST"}}`, `{"StreamName":"cam","StartSelector":{}}`,
		`{"StreamName":"cam","StartSelector":{"startSelectorType":"EARLIEST","StartSelectorType":"NOW"}}`},
	"/listFragments": {`{"StreamName":"cam"}`, `{"StreamName":"cam","MaxResults":1}`, `{"StreamName":"cam","NextToken":"!!"}`,
		`{"StreamName":"cam","FragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":0,"EndTimestamp":4e9}}}`},
	"/getMediaForFragmentList": {`{"StreamName":"cam","Fragments":["1"]}`, `{"StreamName":"cam","Fragments":[]}`, `{"StreamName":"cam","Fragments":["x"]}`},
}

// FuzzDecodeRequests sends a fuzzed body to one of the server's JSON routes (control plane,
// GetMedia, ListFragments, GetMediaForFragmentList, and any route other files add) on a fresh
// server holding a stream "cam" with two fragments, through ServeHTTP. No request may panic (the
// handler turns a panic into a 500) or be a 5xx; an error answer carries x-amzn-ErrorType and a
// JSON body with __type; a 200 JSON answer is valid JSON. The PutMedia body (MKV) is FuzzReader's
// and the hostile table's business; the GetMedia here carries x-kvs-no-follow so it ends.
func FuzzDecodeRequests(f *testing.F) {
	c := loadClip(f, "h264.mkv")
	upload := c.header()
	for i := range 2 {
		upload = append(upload, c.cluster(f, i, baseMillis)...)
	}
	probe, err := New(Config{Store: store.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer probe.Close()
	var paths []string
	for p := range probe.routes {
		// PutMedia's body (MKV) is not JSON; a node's internal tail follows its stream until
		// the other node hangs up (it has no no-follow), so here it never ended.
		if p != "/putMedia" && p != tailPath {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for i, p := range paths {
		for _, s := range decodeSeeds[p] {
			f.Add(uint8(i), []byte(s))
		}
		f.Add(uint8(i), []byte(`{}`))
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		srv, err := New(Config{Store: store.NewMem(), IdleAckInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		// A request that does not end within a minute fails the input, instead of holding up
		// the fuzzing worker for good (which the engine does not report).
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		serve := func(path string, body []byte, hdr ...string) *httptest.ResponseRecorder {
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, req)
			return w
		}
		if w := serve("/createStream", []byte(`{"StreamName":"cam","DataRetentionInHours":1}`)); w.Code != 200 {
			t.Fatalf("createStream: %d %s", w.Code, w.Body)
		}
		if w := serve("/putMedia", upload, hdrStreamName, "cam", hdrTimecodeType, "ABSOLUTE"); w.Code != 200 || strings.Count(w.Body.String(), "PERSISTED") != 2 {
			t.Fatalf("putMedia: %d %s", w.Code, w.Body)
		}
		path := paths[int(op)%len(paths)]
		w := serve(path, body, hdrNoFollow, "1", "Content-Type", "application/json")
		if ctx.Err() != nil {
			t.Fatalf("%s %q: no end within a minute", path, body)
		}
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d %s", path, body, w.Code, w.Body)
		}
		if w.Code != 200 {
			var eb errorBody
			if typ := w.Header().Get("x-amzn-ErrorType"); typ == "" || json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Type != typ {
				t.Fatalf("%s %q: error answer %d %v %q", path, body, w.Code, w.Header(), w.Body)
			}
			return
		}
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: invalid JSON answer %q", path, body, w.Body)
		}
	})
}
