package server

import (
	"encoding/json"
	"math"
	"testing"
)

func TestFragmentNumberRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range []numbering{0, 1, 1765000000123, maxFragmentEpoch} {
		for _, n := range []uint64{1, 2, 9, 10, 12345, math.MaxUint64} {
			s := e.format(n)
			if len(s) != 47 {
				t.Errorf("%d/%d: %q has %d digits, want 47", e, n, s, len(s))
			}
			got, err := decodeFragmentNumber(s)
			if err != nil || got != (fragmentNumber{e, n}) {
				t.Errorf("decode(%q) = %+v, %v; want %d/%d", s, got, err, e, n)
			}
		}
		if e.format(9) >= e.format(10) {
			t.Errorf("%d: string order differs from numeric order", e)
		}
	}
	// A stream created later numbers after every fragment of one created before.
	if numbering(1765000000123).format(math.MaxUint64) >= numbering(1765000000124).format(1) {
		t.Error("a later stream's first number sorts before an earlier stream's")
	}
}

// TestFragmentNumberOfStream: a number names a fragment of the stream it was issued for, or of
// any stream when it was issued before numbers carried the creation time; not of another stream.
func TestFragmentNumberOfStream(t *testing.T) {
	t.Parallel()
	arn := "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam/1765000000123"
	e := numberingOf(arn)
	if e != 1765000000123 {
		t.Fatalf("numberingOf(%s) = %d, want its creation time", arn, e)
	}
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{e.format(7), true},
		{formatFragmentNumber(7), true}, // issued before: any stream of the name
		{numbering(1765000000122).format(7), false},
		{numbering(1765000000124).format(7), false},
	} {
		f, err := decodeFragmentNumber(tc.s)
		if err != nil {
			t.Fatalf("decode(%q): %v", tc.s, err)
		}
		if n, ok := f.of(e); ok != tc.want || n != 7 {
			t.Errorf("%s of %s = %d, %v; want 7, %v", tc.s, arn, n, ok, tc.want)
		}
		if n, err := parseFragmentNumberOf(e, tc.s); (err == nil) != tc.want || (tc.want && n != 7) {
			t.Errorf("parseFragmentNumberOf(%s) = %d, %v; want 7 and success %v", tc.s, n, err, tc.want)
		}
	}
	for _, a := range []string{"", "x", "arn:aws:kinesisvideo:us-west-2:1:stream/cam/x", "arn:aws:kinesisvideo:us-west-2:1:stream/cam/99999999999999999"} {
		if got := numberingOf(a); got != 0 {
			t.Errorf("numberingOf(%q) = %d, want 0 (numbers as before)", a, got)
		}
	}
}

var badFragmentNumbers = []string{"", "0", "1", "91343852333", "91343852333000000000000000000000000000000000000",
	"9134385233300000000000000000000000000000000000x", "81343852333000000000000000000000000000000000001",
	"913438523330000000000000000000000000000000000001", "91343852333000176500000012300000000000000000000",
	"9134385233300017650000001230000000000000000000-", "91343852333+00176500000012300000000000000000001"}

func TestParseFragmentNumberRejects(t *testing.T) {
	t.Parallel()
	for _, s := range badFragmentNumbers {
		if f, err := decodeFragmentNumber(s); err == nil {
			t.Errorf("decode(%q) = %+v, want an error", s, f)
		}
	}
}

func FuzzParseFragmentNumber(f *testing.F) {
	for _, s := range badFragmentNumbers {
		f.Add(s)
	}
	f.Add(formatFragmentNumber(42))
	f.Add(numbering(1765000000123).format(42))
	f.Fuzz(func(t *testing.T, s string) {
		n, err := decodeFragmentNumber(s)
		if err == nil && n.epoch.format(n.n) != s {
			t.Fatalf("%q parsed to %+v, which formats as %q", s, n, n.epoch.format(n.n))
		}
	})
}

func TestFormatTimestampTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns   int64
		want string
	}{
		{0, "0.000"},
		{5e9, "5.000"},
		{1511852108513e6, "1511852108.513"},
		{1511852108513999999, "1511852108.513"},
		{1700000000005e6, "1700000000.005"},
	}
	for _, tc := range tests {
		if got := formatTimestampTag(tc.ns); got != tc.want {
			t.Errorf("formatTimestampTag(%d) = %q, want %q", tc.ns, got, tc.want)
		}
	}
}

func TestAppendAckMatchesJSON(t *testing.T) {
	t.Parallel()
	tc := int64(1597730826769)
	for _, ev := range []ackEvent{
		{EventType: ackIdle},
		{EventType: ackBuffering, FragmentTimecode: &tc, FragmentNumber: formatFragmentNumber(7)},
		{EventType: ackError, FragmentTimecode: &tc, FragmentNumber: formatFragmentNumber(8), ErrorCode: ackErrors[4002], ErrorId: 4002},
		{EventType: ackError, ErrorCode: ackErrors[4006], ErrorId: 4006},
	} {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendAck(nil, &ev)); got != string(want)+"\n" {
			t.Errorf("appendAck = %s, want %s", got, want)
		}
	}
}

// formatFragmentNumber formats n as kvs did before fragment numbers carried the stream's creation
// time (wire.go): the server takes it as fragment n of any stream of the name, so tests name
// fragments with it whatever the stream's ARN.
func formatFragmentNumber(n uint64) string { return numbering(0).format(n) }

// parseFragmentNumber returns the store number of a fragment number of any stream.
func parseFragmentNumber(s string) (uint64, error) {
	f, err := decodeFragmentNumber(s)
	return f.n, err
}
