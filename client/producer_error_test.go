package client

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/mkv"
)

// Every part of the message once, separated by one "; " (with an error, spooled and failed
// fragments it read "…; ; …").
func TestProducerErrorMessage(t *testing.T) {
	t.Parallel()
	e := &ProducerError{Err: errors.New("connection reset"), Spooled: 2, Dropped: 1, SpoolDir: "/var/spool/cam",
		Failed: []FragmentFailure{{Timecode: 1000, FragmentNumber: "91343852333000000000000000000000000000000000001", Err: errors.New("ERROR 5001")}}}
	want := "putmedia: connection reset; 2 fragment(s) not sent are kept in the spool /var/spool/cam: run again with the same spool directory to send them; " +
		"1 fragment(s) were dropped because the spool /var/spool/cam was full; 1 fragment(s) not stored: [timecode 1000 fragment 91343852333000000000000000000000000000000000001: ERROR 5001]"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%q\nwant\n%q", got, want)
	}
	if got := (&ProducerError{Err: errors.New("x"), Spooled: 1, SpoolDir: "d"}).Error(); strings.Contains(got, "; ;") {
		t.Errorf("Error() = %q", got)
	}
}

// Close's error says "putmedia:" once, and a failed fragment's number once: before, a stream
// deleted under the producer gave "putmedia: putmedia: STREAM_NOT_ACTIVE (4008)…; 4 fragment(s)
// not stored: [timecode … : putmedia: STREAM_NOT_ACTIVE (4008)…]", and a fragment refused with
// 4004 "[timecode … fragment N: putmedia: fragment N: …]".
func TestProducerErrorOnePrefix(t *testing.T) {
	t.Parallel()
	var m *mediaServer
	var once sync.Once
	deleteOnUpload := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/putMedia" && r.Header.Get("x-amzn-stream-name") == "gone" {
				r.Body = testutil.BeforeFirstRead(r.Body, func() { once.Do(func() { deleteStream(t, m.client, "gone") }) })
			}
			h.ServeHTTP(w, r)
		})
	}
	m = startMedia(t, deleteOnUpload, nil)
	frags := clipFragments(t, "h264.mkv", time.Second)
	m.createStream(t, "gone", 24)
	_, err := produce(t, m.client, ProducerConfig{Stream: "gone"}, frags)
	var ae *AckErr
	if !errors.As(err, &ae) || ae.Ack.ErrorID != 4008 {
		t.Fatalf("Close = %v, want ERROR 4008", err)
	}
	if n := strings.Count(err.Error(), "putmedia"); n != 1 {
		t.Errorf("Close = %q: %d times putmedia, want once", err, n)
	}

	m.createStream(t, "bad", 24)
	back := *frags[1] // goes back in time: ERROR 4004
	back.Timecode = frags[0].Timecode - 5000
	back.Frames = append([]mkv.Frame(nil), frags[1].Frames...)
	for i := range back.Frames {
		back.Frames[i].Timecode -= frags[1].Timecode - back.Timecode
	}
	_, err = produce(t, m.client, ProducerConfig{Stream: "bad", RetryBackoff: time.Millisecond}, []*mkv.Fragment{frags[0], &back})
	var pe *ProducerError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 {
		t.Fatalf("Close = %v, want one failed fragment", err)
	}
	if n := strings.Count(err.Error(), "putmedia"); n != 1 {
		t.Errorf("Close = %q: %d times putmedia, want once", err, n)
	}
	// A failure the server numbered, whose ack names the number too.
	num := "91343852333000000000000000000000000000000000001"
	pe.Failed[0].FragmentNumber = num
	pe.Failed[0].Err = &AckErr{Ack: Ack{EventType: AckError, FragmentNumber: num, ErrorID: 4004, ErrorCode: "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS"}}
	if n := strings.Count(pe.Error(), num); n != 1 {
		t.Errorf("Error() = %q: the fragment number %d times, want once", pe.Error(), n)
	}
}

func deleteStream(t *testing.T, c *Client, name string) {
	desc, err := c.Control.DescribeStream(t.Context(), &kinesisvideo.DescribeStreamInput{StreamName: aws.String(name)})
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := c.Control.DeleteStream(t.Context(), &kinesisvideo.DeleteStreamInput{StreamARN: desc.StreamInfo.StreamARN}); err != nil {
		t.Error(err)
	}
}

// Fragments that failed for one reason are one group, "[N fragments, timecodes A to B: REASON]",
// not the reason once per fragment (12 times for a stream deleted under the producer); other
// reasons are groups of their own, in the order of their first fragment.
func TestProducerErrorGroupsReasons(t *testing.T) {
	t.Parallel()
	gone := &AckErr{Ack: Ack{EventType: AckError, ErrorID: 4008, ErrorCode: "STREAM_NOT_ACTIVE"}}
	e := &ProducerError{}
	for i := range 12 {
		e.Failed = append(e.Failed, FragmentFailure{Timecode: int64(1000 * (i + 1)), Err: gone})
	}
	got := e.Error()
	if n := strings.Count(got, "STREAM_NOT_ACTIVE"); n != 1 {
		t.Errorf("Error() names STREAM_NOT_ACTIVE %d times, want once:\n%s", n, got)
	}
	want := "putmedia: 12 fragment(s) not stored: [12 fragments, timecodes 1000 to 12000: STREAM_NOT_ACTIVE (4008): the stream is not active (deleted?)]"
	if got != want {
		t.Errorf("Error() =\n%q\nwant\n%q", got, want)
	}

	num := "91343852333000000000000000000000000000000000007"
	e.Failed = append(e.Failed[:3], FragmentFailure{Timecode: 500, FragmentNumber: num,
		Err: &AckErr{Ack: Ack{EventType: AckError, FragmentNumber: num, ErrorID: 4004, ErrorCode: "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS"}}})
	e.Failed = append(e.Failed, FragmentFailure{Timecode: 9000, Err: gone})
	want = "putmedia: 5 fragment(s) not stored: [4 fragments, timecodes 1000 to 9000: STREAM_NOT_ACTIVE (4008): the stream is not active (deleted?)] " +
		"[timecode 500 fragment " + num + ": FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS (4004): a fragment's timecode is lower than the previous one's: timestamps must increase]"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%q\nwant\n%q", got, want)
	}
}
