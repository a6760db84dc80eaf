package server

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/server/store"
)

// imagesRequestCases are GetImages bodies as clients send them, with what parseGetImages makes
// of them; they seed FuzzGetImagesRequest too.
var imagesRequestCases = []struct {
	name, body string
	ok         bool
	count      int // samples
	page       int
	w, h       int
	quality    int
}{
	{"botocore integer seconds", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000010,"SamplingInterval":3000,"Format":"JPEG"}`,
		true, 4, 25, 0, 0, 80},
	{"go sdk milliseconds", `{"StreamARN":"arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1","ImageSelectorType":"SERVER_TIMESTAMP","StartTimestamp":1700000000.5,"EndTimestamp":1700000000.9,"SamplingInterval":200,"Format":"PNG","HeightPixels":90,"MaxResults":100}`,
		true, 3, 100, 0, 90, 80},
	{"start equals end", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000000,"Format":"JPEG","FormatConfig":{"JPEGQuality":"100"},"WidthPixels":3840,"HeightPixels":2160}`,
		true, 1, 25, 3840, 2160, 100},
	{"range shorter than interval", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000002,"SamplingInterval":20000,"Format":"JPEG"}`,
		true, 1, 25, 0, 0, 80},
	{"300 s at 200 ms", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000300,"SamplingInterval":200,"Format":"JPEG","MaxResults":1}`,
		true, 1501, 1, 0, 0, 80},
	{"exponent timestamps", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1.7E9,"EndTimestamp":1.700000006E9,"Format":"JPEG"}`,
		true, 3, 25, 0, 0, 80},
	{"no selector", `{"StreamName":"cam","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG"}`, false, 0, 0, 0, 0, 0},
	{"no end", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"Format":"JPEG"}`, false, 0, 0, 0, 0, 0},
	{"no format", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001}`, false, 0, 0, 0, 0, 0},
	{"300.001 s", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000300.001,"Format":"JPEG"}`, false, 0, 0, 0, 0, 0},
	{"interval too big for int32", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"SamplingInterval":2147483648,"Format":"JPEG"}`, false, 0, 0, 0, 0, 0},
	{"two format config entries", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG","FormatConfig":{"JPEGQuality":"5","X":"1"}}`, false, 0, 0, 0, 0, 0},
	{"empty format config", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG","FormatConfig":{}}`, false, 0, 0, 0, 0, 0},
	{"quality with sign", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG","FormatConfig":{"JPEGQuality":"+50"}}`, false, 0, 0, 0, 0, 0},
	{"max results 0", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG","MaxResults":0}`, false, 0, 0, 0, 0, 0},
	{"width 0", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000001,"Format":"JPEG","WidthPixels":0,"HeightPixels":10}`, false, 0, 0, 0, 0, 0},
	{"token on the first page", `{"StreamName":"cam","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":1700000000,"EndTimestamp":1700000010,"Format":"JPEG","NextToken":"AQAAAAAAAAAAAAAAAA=="}`, false, 0, 0, 0, 0, 0},
}

func TestParseGetImages(t *testing.T) {
	for _, tc := range imagesRequestCases {
		t.Run(tc.name, func(t *testing.T) {
			var r getImagesRequest
			if err := json.Unmarshal([]byte(tc.body), &r); err != nil {
				t.Fatal(err)
			}
			q, err := parseGetImages(&r)
			if (err == nil) != tc.ok {
				t.Fatalf("parseGetImages: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if ae, ok := err.(*APIError); !ok || ae.Code != codeInvalidArgument || ae.Message == "" {
					t.Errorf("error %#v, want an InvalidArgumentException with a message", err)
				}
				return
			}
			if q.count != tc.count || q.page != tc.page || q.width != tc.w || q.height != tc.h || q.quality != tc.quality || q.next != 0 {
				t.Errorf("query %+v, want count %d, page %d, size %dx%d, quality %d", q, tc.count, tc.page, tc.w, tc.h, tc.quality)
			}
		})
	}
}

// TestImagesTokenRoundTrip: a page's NextToken brings the next request to the next sample, and
// only with the same samples (selector, range, interval).
func TestImagesTokenRoundTrip(t *testing.T) {
	q := imagesQuery{kind: store.ProducerTime, start: time.Unix(1700000000, 0), end: time.Unix(1700000100, 0), interval: time.Second, count: 101}
	tok := encodeImagesToken(40, q.fingerprint())
	if next, err := decodeImagesToken(tok, q.fingerprint(), q.count); err != nil || next != 40 {
		t.Fatalf("decode: %d, %v", next, err)
	}
	other := q
	other.kind = store.ServerTime
	if _, err := decodeImagesToken(tok, other.fingerprint(), q.count); err == nil {
		t.Error("a token of a PRODUCER_TIMESTAMP request was taken for a SERVER_TIMESTAMP one")
	}
	if _, err := decodeImagesToken(encodeImagesToken(101, q.fingerprint()), q.fingerprint(), q.count); err == nil {
		t.Error("a token past the last sample was taken")
	}
}

// TestGetImagesWire checks the raw JSON answer, as botocore and the Go SDK read it: "TimeStamp"
// spelled so, as an epoch-seconds number; an image has ImageContent and no Error, a gap has Error
// NO_MEDIA and no ImageContent; no NextToken on the last page.
func TestGetImagesWire(t *testing.T) {
	t.Parallel()
	testutil.NeedTool(t, "ffmpeg")
	e := newMediaEnv(t, "mem")
	withGap(t, e, "cam")
	resp := e.post(t, t.Context(), "/getImages", map[string]any{"StreamName": "cam", "ImageSelectorType": "PRODUCER_TIMESTAMP",
		"StartTimestamp": baseMillis / 1000, "EndTimestamp": baseMillis/1000 + 6, "SamplingInterval": 6000, "Format": "JPEG",
		"WidthPixels": 32, "HeightPixels": 24})
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var raw map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	imgs := raw["Images"]
	if len(raw) != 1 || len(imgs) != 2 {
		t.Fatalf("answer %s: want {\"Images\":[two]}", body)
	}
	if string(imgs[0]["TimeStamp"]) != "1700000000" || len(imgs[0]) != 2 || imgs[0]["ImageContent"] == nil {
		t.Errorf("first image %s, want TimeStamp 1700000000 and ImageContent only", body[:min(len(body), 200)])
	}
	if string(imgs[1]["TimeStamp"]) != "1700000006" || string(imgs[1]["Error"]) != `"NO_MEDIA"` || len(imgs[1]) != 2 {
		t.Errorf("second image %v, want TimeStamp 1700000006 and Error NO_MEDIA only", imgs[1])
	}
	if !strings.HasPrefix(string(imgs[0]["ImageContent"]), `"/9j/`) { // base64 of a JPEG's FF D8 FF
		t.Errorf("ImageContent starts %.10s, want a base64 JPEG", imgs[0]["ImageContent"])
	}
}

// FuzzGetImagesRequest: any JSON body either fails with an InvalidArgumentException or gives a
// query within the model's bounds.
func FuzzGetImagesRequest(f *testing.F) {
	for _, tc := range imagesRequestCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r getImagesRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		q, err := parseGetImages(&r)
		if err != nil {
			if ae, ok := err.(*APIError); !ok || ae.Code != codeInvalidArgument {
				t.Fatalf("error %v, want InvalidArgumentException", err)
			}
			return
		}
		switch {
		case q.count < 1 || q.count > 1501 || q.next < 0 || q.next >= q.count:
			t.Fatalf("samples %d, next %d", q.count, q.next)
		case q.page < 1 || q.page > imagesMaxPage, q.quality < 1 || q.quality > 100:
			t.Fatalf("page %d, quality %d", q.page, q.quality)
		case q.width < 0 || q.width > decode.MaxWidth || q.height < 0 || q.height > decode.MaxHeight || (q.width > 0 && q.height == 0):
			t.Fatalf("size %dx%d", q.width, q.height)
		case q.interval < imagesMinInterval*time.Millisecond || q.end.Before(q.start) || q.end.Sub(q.start) > imagesMaxRange:
			t.Fatalf("range %v–%v every %v", q.start, q.end, q.interval)
		}
	})
}

// FuzzImagesToken: parsing never panics, and what parses is exactly what encoding gives back.
func FuzzImagesToken(f *testing.F) {
	for _, s := range []string{encodeImagesToken(1, 0), encodeImagesToken(1500, 0xfedcba9876543210), "", "AQ==",
		"AQAAAAAAAAAAAAAAAA==", "bm90IGEgdG9rZW4=", strings.Repeat("A", 4096), "AQAAAAEAAAAAAAAAAB=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		next, fp, err := parseImagesToken(tok)
		if err != nil {
			return
		}
		if next < 0 {
			t.Fatalf("next %d", next)
		}
		if back := encodeImagesToken(next, fp); back != tok {
			t.Fatalf("token %q parses to (%d, %#x), which encodes as %q", tok, next, fp, back)
		}
	})
}
