package server

import (
	"encoding/json"
	"math"
	"testing"
)

func TestFragmentNumberRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []uint64{1, 2, 9, 10, 12345, math.MaxUint64} {
		s := formatFragmentNumber(n)
		if len(s) != 47 {
			t.Errorf("%d: %q has %d digits, want 47", n, s, len(s))
		}
		got, err := parseFragmentNumber(s)
		if err != nil || got != n {
			t.Errorf("parse(%q) = %d, %v; want %d", s, got, err, n)
		}
	}
	if formatFragmentNumber(9) >= formatFragmentNumber(10) {
		t.Error("string order differs from numeric order")
	}
}

var badFragmentNumbers = []string{"", "0", "1", "91343852333", "91343852333000000000000000000000000000000000000",
	"9134385233300000000000000000000000000000000000x", "81343852333000000000000000000000000000000000001",
	"913438523330000000000000000000000000000000000001"}

func TestParseFragmentNumberRejects(t *testing.T) {
	t.Parallel()
	for _, s := range badFragmentNumbers {
		if n, err := parseFragmentNumber(s); err == nil {
			t.Errorf("parse(%q) = %d, want an error", s, n)
		}
	}
}

func FuzzParseFragmentNumber(f *testing.F) {
	for _, s := range badFragmentNumbers {
		f.Add(s)
	}
	f.Add(formatFragmentNumber(42))
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseFragmentNumber(s)
		if err == nil && formatFragmentNumber(n) != s {
			t.Fatalf("%q parsed to %d, which formats as %q", s, n, formatFragmentNumber(n))
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
