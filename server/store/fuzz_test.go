package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/record"
)

// recordSeeds are the fuzz seeds: valid records, a torn one and a garbled one.
func recordSeeds() [][]byte {
	var out [][]byte
	for _, tc := range []struct {
		name string
		meta FragmentMeta
		data []byte
	}{
		{"empty", FragmentMeta{Number: 1}, nil},
		{"small", FragmentMeta{Number: 7, ServerTime: base, ProducerTime: base.Add(-time.Second), Duration: time.Second}, []byte("fragment")},
		{"zero times", FragmentMeta{Number: 1 << 40}, bytes.Repeat([]byte{0xAA}, 300)},
	} {
		rec := append(newRecordHeader(tc.meta, tc.data).encode(nil), tc.data...)
		out = append(out, rec, rec[:len(rec)-1], append(bytes.Clone(rec), rec...))
		bad := bytes.Clone(rec)
		bad[len(bad)/2] ^= 1
		out = append(out, bad)
	}
	return out
}

// FuzzRecordHeader checks the segment record decoder: no panic, no allocation driven by the
// length field, decode → encode gives the same header bytes, and a scan over arbitrary bytes
// only ever stops at damage.
func FuzzRecordHeader(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := decodeRecordHeader(data); err == nil {
			enc := h.encode(nil)
			if !bytes.Equal(enc, data[:recordHeaderSize]) {
				t.Fatalf("re-encoded header differs:\n%x\n%x", enc, data[:recordHeaderSize])
			}
			if h2, err := decodeRecordHeader(enc); err != nil || h2 != h {
				t.Fatalf("round trip: %+v, %v", h2, err)
			}
		}
		r := bytes.NewReader(data)
		size := int64(len(data))
		for off := int64(0); off < size; {
			_, n, err := readRecord(r, off, size)
			if err != nil {
				if !record.IsDamage(err) {
					t.Fatalf("offset %d: %v is not a damage error", off, err)
				}
				break
			}
			if n < recordHeaderSize || off+n > size {
				t.Fatalf("offset %d: record length %d in %d bytes", off, n, size)
			}
			off += n
		}
	})
}

// FuzzIndexEntry checks the bbolt value and key decoders: no panic, and whatever decodes
// re-encodes to the same bytes.
func FuzzIndexEntry(f *testing.F) {
	e := indexEntry{Number: 9, Segment: 2, Offset: 4096, Size: 256 << 10, ServerNanos: base.UnixNano(), ProducerNanos: zeroTimeNanos, Duration: 2e9}
	var info segmentInfo
	info.add(e)
	f.Add(timeIndexKey(e.ServerNanos, e.Number), e.encode())
	f.Add(timeIndexKey(zeroTimeNanos, 1), info.encode())
	f.Add([]byte{}, []byte{1, 2, 3})
	huge := e
	huge.Offset = 1<<63 - 1 // end() would overflow: must not decode
	f.Add(timeIndexKey(-1, 1<<64-1), huge.encode())
	f.Fuzz(func(t *testing.T, key, value []byte) {
		if e, err := decodeIndexEntry(7, value); err == nil {
			if !bytes.Equal(e.encode(), value) {
				t.Fatalf("entry round trip: %+v", e)
			}
			if e.end() < e.Offset {
				t.Fatalf("entry end overflows: %+v", e)
			}
		}
		if s, err := decodeSegmentInfo(value); err == nil && !bytes.Equal(s.encode(), value) {
			t.Fatalf("segment info round trip: %+v", s)
		}
		if ts, n, ok := decodeTimeIndexKey(key); ok && !bytes.Equal(timeIndexKey(ts, n), key) {
			t.Fatalf("time key round trip: %d %d", ts, n)
		}
	})
}
