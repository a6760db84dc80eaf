package client

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

var ackTests = []struct {
	name    string
	in      string
	want    []Ack
	wantErr bool
}{
	{"real lines", `{"EventType":"BUFFERING","FragmentTimecode":1597730826769,"FragmentNumber":"91343852333181481915235394203149336554319348843"}
{"EventType":"RECEIVED","FragmentTimecode":1597730826769,"FragmentNumber":"91343852333181481915235394203149336554319348843"}
{"EventType":"PERSISTED","FragmentTimecode":1597730826769,"FragmentNumber":"91343852333181481915235394203149336554319348843"}
{"EventType":"ERROR","FragmentTimecode":1597065596575,"FragmentNumber":"91343852333288683254220252678785835020226515305","ErrorCode":"MAX_FRAGMENT_DURATION_REACHED","ErrorId":4002}
`, []Ack{
		{EventType: "BUFFERING", FragmentTimecode: 1597730826769, FragmentNumber: "91343852333181481915235394203149336554319348843"},
		{EventType: "RECEIVED", FragmentTimecode: 1597730826769, FragmentNumber: "91343852333181481915235394203149336554319348843"},
		{EventType: "PERSISTED", FragmentTimecode: 1597730826769, FragmentNumber: "91343852333181481915235394203149336554319348843"},
		{EventType: "ERROR", FragmentTimecode: 1597065596575, FragmentNumber: "91343852333288683254220252678785835020226515305", ErrorCode: "MAX_FRAGMENT_DURATION_REACHED", ErrorID: 4002},
	}, false},
	{"idle and blank lines", "\n{\"EventType\":\"IDLE\"}\r\n\n", []Ack{{EventType: "IDLE"}}, false},
	{"packed objects", `{"EventType":"IDLE"}{"EventType":"PERSISTED","FragmentTimecode":5,"FragmentNumber":"1"}`,
		[]Ack{{EventType: "IDLE"}, {EventType: "PERSISTED", FragmentTimecode: 5, FragmentNumber: "1"}}, false},
	{"no trailing newline", `{"EventType":"RECEIVED","FragmentTimecode":1,"FragmentNumber":"2"}`,
		[]Ack{{EventType: "RECEIVED", FragmentTimecode: 1, FragmentNumber: "2"}}, false},
	{"garbage", "HTTP/1.1 502 Bad Gateway\n", nil, true},
	{"missing event type", `{"FragmentNumber":"1"}` + "\n", nil, true},
	{"too long", "{\"EventType\":\"" + strings.Repeat("x", 5000) + "\"}\n", nil, true},
}

func TestReadAcks(t *testing.T) {
	t.Parallel()
	for _, tc := range ackTests {
		t.Run(tc.name, func(t *testing.T) {
			var got []Ack
			// One byte at a time: ACKs split across reads must still parse.
			err := ReadAcks(iotest.OneByteReader(strings.NewReader(tc.in)), func(a Ack) error { got = append(got, a); return nil })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d acks %+v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("ack %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestReadAcksStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	n := 0
	err := ReadAcks(strings.NewReader("{\"EventType\":\"IDLE\"}\n{\"EventType\":\"IDLE\"}\n"), func(Ack) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("err %v after %d acks", err, n)
	}
}

func TestAckErrMessage(t *testing.T) {
	t.Parallel()
	e := &AckErr{Ack: Ack{EventType: AckError, FragmentNumber: "7", ErrorID: 4002, ErrorCode: "MAX_FRAGMENT_DURATION_REACHED"}}
	if !strings.Contains(e.Error(), "MAX_FRAGMENT_DURATION_REACHED") || !strings.Contains(e.Error(), "keyframes") {
		t.Fatalf("message %q does not say what happened and what to do", e.Error())
	}
	if e.Retryable() {
		t.Fatal("a media error must not be retried")
	}
}

// TestAckErrMessageWithoutFragment: an ERROR ack that names no fragment (the stream deleted
// under an upload: 4008 with no FragmentNumber) reads as a sentence, not "fragment : ...".
func TestAckErrMessageWithoutFragment(t *testing.T) {
	t.Parallel()
	e := &AckErr{Ack: Ack{EventType: AckError, ErrorID: 4008, ErrorCode: "STREAM_NOT_ACTIVE"}}
	want := "putmedia: STREAM_NOT_ACTIVE (4008): the stream is not active (deleted?)"
	if e.Error() != want {
		t.Fatalf("message %q, want %q", e.Error(), want)
	}
}

func FuzzReadAcks(f *testing.F) {
	for _, tc := range ackTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n := 0
		_ = ReadAcks(strings.NewReader(in), func(a Ack) error {
			if a.EventType == "" {
				t.Fatal("event without type delivered")
			}
			n++
			return nil
		})
		if n > len(in) {
			t.Fatalf("%d acks from %d bytes", n, len(in))
		}
	})
}
