package server

import (
	"encoding/json"
	"reflect"
	"testing"
)

// BenchmarkDecodeMembers measures what decodeJSON does to a ListFragments body on every request:
// its json.Unmarshal, the cheap test for keys that differ from a member only in case
// (mayHaveFoldedMembers), and the token walk (foldedMembers) that test spares the usual body.
func BenchmarkDecodeMembers(b *testing.B) {
	body := []byte(`{"StreamName":"cam","MaxResults":1000,"FragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{"StartTimestamp":1700000000.5,"EndTimestamp":1700003600}}}`)
	t := reflect.TypeOf(&listFragmentsRequest{})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v listFragmentsRequest
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cheap-test", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if mayHaveFoldedMembers(body, t) {
				b.Fatal("a body with exact member names only may have folded ones")
			}
		}
	})
	b.Run("token-walk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if f, err := foldedMembers(body, t); err != nil || len(f) > 0 {
				b.Fatal(f, err)
			}
		}
	})
}
