package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
)

// fuzzTransport answers GetDataEndpoint with a fixed endpoint and the first GetMedia of each
// iteration with the fuzz input as a 200 video/webm body; later GetMedia calls (reconnects) get a
// 404, which ends the Consumer.
type fuzzTransport struct {
	body  atomic.Pointer[[]byte]
	calls atomic.Int32
}

func (t *fuzzTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Request: r, ProtoMajor: 1, ProtoMinor: 1}
	switch r.URL.Path {
	case "/getDataEndpoint":
		resp.Header.Set("Content-Type", "application/json")
		resp.Body = io.NopCloser(strings.NewReader(`{"DataEndpoint":"http://kvs.invalid"}`))
	case "/getMedia":
		if t.calls.Add(1) == 1 {
			resp.Header.Set("Content-Type", "video/webm")
			resp.Body = io.NopCloser(bytes.NewReader(*t.body.Load()))
			break
		}
		resp.StatusCode = 404
		resp.Header.Set("x-amzn-ErrorType", "ResourceNotFoundException")
		resp.Body = io.NopCloser(strings.NewReader(`{"__type":"ResourceNotFoundException","Message":"gone"}`))
	default:
		return nil, errors.New("unexpected path " + r.URL.Path)
	}
	return resp, nil
}

// chunkSeeds are GetMedia response bodies as kvs and KVS send them: data chunks with their KVS
// tags, an error chunk, a GetMediaForFragmentList-style exception chunk, and a tags-only document.
func chunkSeeds(t testing.TB) [][]byte {
	tracks := []mkv.Track{{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: "V_MPEG4/ISO/AVC", CodecPrivate: []byte{1, 0x64, 0, 0x1f, 0xff, 0xe0}, Width: 64, Height: 48}}
	frag := func(n string, tc int64) []byte {
		b, err := mkv.AppendFragment(nil, &mkv.Fragment{
			Tracks:   tracks,
			Tags:     []mkv.SimpleTag{{Name: mkv.TagFragmentNumber, Value: n}, {Name: mkv.TagServerTimestamp, Value: "1700000000.123"}, {Name: mkv.TagProducerTimestamp, Value: "1700000000.000"}},
			Timecode: tc,
			Frames: []mkv.Frame{
				{Track: 1, Timecode: tc, Keyframe: true, Data: []byte{0, 0, 0, 2, 0x65, 0x88}},
				{Track: 1, Timecode: tc + 40, Data: []byte{0, 0, 0, 2, 0x41, 0x9a}},
			},
			TrailingTags: []mkv.SimpleTag{{Name: mkv.TagMillisBehindNow, Value: "15"}, {Name: mkv.TagContinuationToken, Value: n}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	errChunk := mkv.AppendTags(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska")),
		mkv.SimpleTag{Name: mkv.TagFragmentNumber, Value: "91343852333181432392682062607743920146159169392"},
		mkv.SimpleTag{Name: mkv.TagErrorID, Value: "4000"}, mkv.SimpleTag{Name: mkv.TagErrorCode, Value: "STREAM_DELETED"})
	excChunk := mkv.AppendTags(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "matroska")),
		mkv.SimpleTag{Name: mkv.TagExceptionErrorCode, Value: "404"}, mkv.SimpleTag{Name: mkv.TagExceptionMessage, Value: "not found"})
	two := append(frag("91343852333181432392682062607743920146159169392", 1000), frag("91343852333181432392682062607743920146159169393", 2000)...)
	return [][]byte{
		nil,
		frag("1", 0),
		two,
		append(append([]byte{}, two...), errChunk...),
		errChunk,
		excChunk,
		mkv.AppendTags(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "webm")), mkv.SimpleTag{Name: "X", Value: "y"}),
		two[:len(two)/2],
	}
}

// FuzzGetMediaChunks runs a real Consumer (NoFollow) over a GetMedia response body made of the
// fuzz input: no panic, no hang, every fragment delivered has frames, every error is typed
// (APIError, ChunkError) or a parse error, and the continuation token follows the tags.
func FuzzGetMediaChunks(f *testing.F) {
	for _, s := range chunkSeeds(f) {
		f.Add(s)
	}
	tr := &fuzzTransport{}
	t := f
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFUZZ")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "fuzz")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	c, err := New(context.Background(), Config{Endpoint: "http://kvs.invalid", Region: "us-east-1", HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tr.body.Store(&body)
		tr.calls.Store(0)
		cons, err := NewConsumer(c, ConsumerConfig{Stream: "cam", Start: StartSelector{Type: StartEarliest}, NoFollow: true,
			IdleTimeout: time.Minute, MaxAttempts: 2, RetryBackoff: time.Microsecond, MaxFragmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := 0; ; i++ {
			if i > len(body)+2 {
				t.Fatalf("%d fragments from %d bytes", i, len(body))
			}
			fr, err := cons.Next(ctx)
			if err != nil {
				var ce *ChunkError
				var ae *APIError
				var se *mkv.SyntaxError
				switch {
				case err == io.EOF, errors.As(err, &ce), errors.As(err, &ae), errors.As(err, &se),
					errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, mkv.ErrElementTooLarge):
				case ctx.Err() != nil:
					t.Fatalf("Next hung: %v", err)
				default:
					// Other reader errors (limits) are fine as long as they are errors, not panics.
				}
				if ce != nil {
					_ = ce.Error()
				}
				return
			}
			if len(fr.Frames) == 0 {
				t.Fatal("a fragment without frames was delivered")
			}
			if tok, ok := fr.Tag(mkv.TagContinuationToken); ok && tok != "" && cons.ContinuationToken() != tok {
				t.Fatalf("token %q, fragment says %q", cons.ContinuationToken(), tok)
			}
		}
	})
}
