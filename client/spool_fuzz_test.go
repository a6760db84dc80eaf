package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/record"
)

// encodeSpoolRecord is a whole record as append writes it.
func encodeSpoolRecord(seq uint64, timecode int64, header, body []byte) []byte {
	h := spoolRecordHeader{HeaderLen: uint32(len(header)), BodyLen: uint32(len(body)), Seq: seq, Timecode: timecode, Scale: 1_000_000, //nolint:gosec // small
		PayloadCRC: crc32.Update(crc32.Checksum(header, castagnoli), castagnoli, body)}
	b := h.encode(nil)
	b = append(b, header...)
	return append(b, body...)
}

// spoolSegmentSeeds are segment files: whole, torn in the header and in the payload, with a
// garbled length, a bad checksum and sequence numbers out of order.
func spoolSegmentSeeds() [][]byte {
	r1 := encodeSpoolRecord(1, 1000, []byte("\x1a\x45\xdf\xa3tracks"), []byte("cluster one"))
	r2 := encodeSpoolRecord(2, 2000, []byte("\x1a\x45\xdf\xa3tracks"), []byte("cluster two, a little longer"))
	r3 := encodeSpoolRecord(3, -5, []byte("h"), bytes.Repeat([]byte{0xAB}, 300))
	whole := bytes.Join([][]byte{r1, r2, r3}, nil)
	garbled := bytes.Clone(whole)
	garbled[len(r1)+5] ^= 0x40 // r2's stream header length
	badCRC := bytes.Clone(whole)
	badCRC[len(whole)-1] ^= 1
	badMiddle := bytes.Clone(whole) // r2's payload: damaged, not torn (r3 follows)
	badMiddle[len(r1)+len(r2)-1] ^= 1
	return [][]byte{
		nil,
		r1,
		whole,
		whole[:len(r1)+10],
		whole[:len(whole)-7],
		garbled,
		badCRC,
		badMiddle,
		bytes.Join([][]byte{r2, r1}, nil),
		append(bytes.Clone(r1), "KVSQ"...),
	}
}

// FuzzSpoolSegment feeds arbitrary bytes to the segment scan that runs when a spool is opened: it
// must not panic or allocate more than the input holds, the whole records it finds must be a
// prefix of the input, and encoding them again must give that prefix back.
func FuzzSpoolSegment(f *testing.F) {
	for _, s := range spoolSegmentSeeds() {
		f.Add(s)
	}
	f.Fuzz(checkSpoolSegment)
}

// FuzzSpoolSegmentSealed is FuzzSpoolSegment on inputs whose records are sealed first: each
// record's payload and header checksums are set right (sealSpoolRecords), so that the fuzzer's
// mutations of lengths, sequence numbers, timecodes and scales reach the code past the checks,
// which random bytes almost never pass (FuzzSpoolSegment found nothing new in 726,705 execs).
func FuzzSpoolSegmentSealed(f *testing.F) {
	for _, s := range spoolSegmentSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSpoolSegment(t, sealSpoolRecords(bytes.Clone(data)))
	})
}

// sealSpoolRecords sets, record after record from the start of data, the payload checksum and
// the header checksum of each record whose magic and lengths fit in data, and returns data.
func sealSpoolRecords(data []byte) []byte {
	for off := 0; off+spoolRecordHeaderSize <= len(data); {
		b := data[off:]
		if !bytes.Equal(b[:len(spoolMagic)], []byte(spoolMagic)) {
			break
		}
		end := spoolRecordHeaderSize + int(binary.LittleEndian.Uint32(b[4:])) + int(binary.LittleEndian.Uint32(b[8:]))
		if end > len(b) || end < spoolRecordHeaderSize {
			break
		}
		binary.LittleEndian.PutUint32(b[36:], crc32.Checksum(b[spoolRecordHeaderSize:end], castagnoli))
		binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
		off += end
	}
	return data
}

// checkSpoolSegment scans data as a spool segment and checks the scan against reading its
// records back one by one and encoding them again.
func checkSpoolSegment(t *testing.T, data []byte) {
	r := bytes.NewReader(data)
	size := int64(len(data))
	sc, err := scanSegment(r, size, true, 0, 0)
	if err != nil {
		t.Fatalf("scan of an in-memory segment returned an I/O error: %v", err)
	}
	if sc.End > size || (sc.Cut == nil) != (sc.End == size) || (sc.Count == 0) != (sc.End == 0) {
		t.Fatalf("scan %+v of %d bytes", sc, size)
	}
	// Read the whole records back one by one and encode them again.
	var again []byte
	var off int64
	damaged := 0
	for i := 0; i < sc.Count; i++ {
		rec, n, err := readSpoolRecord(r, off, size, true)
		if errors.Is(err, record.ErrPayloadCRC) && off+n < size {
			// Kept by the scan as damaged, not torn: records follow it. Its bytes stay as they are.
			damaged++
			if i == 0 && rec.Seq != sc.First || i == sc.Count-1 && rec.Seq != sc.Last {
				t.Fatalf("damaged record %d: seq %d, scan %+v", i, rec.Seq, sc)
			}
			again = append(again, data[off:off+n]...)
			off += n
			continue
		}
		if err != nil {
			t.Fatalf("record %d at %d: %v, but the scan counted it whole", i, off, err)
		}
		if i == 0 && rec.Seq != sc.First || i == sc.Count-1 && rec.Seq != sc.Last {
			t.Fatalf("record %d: seq %d, scan %+v", i, rec.Seq, sc)
		}
		again = append(again, encodeSpoolRecord(rec.Seq, rec.Timecode, rec.Header, rec.Body)...)
		if rec.Scale != 1_000_000 {
			// Another scale round-trips too, but encodeSpoolRecord writes ms: patch it in.
			copy(again[len(again)-int(n)+28:], data[off+28:off+36])
			copy(again[len(again)-int(n)+40:], data[off+40:off+44])
		}
		bufpool.Put(rec.Body)
		off += n
	}
	if off != sc.End || !bytes.Equal(again, data[:sc.End]) {
		t.Fatalf("records encoded again (%d bytes) differ from the %d whole bytes scanned", len(again), sc.End)
	}
	if damaged != sc.Damaged {
		t.Fatalf("%d damaged records read back, scan %+v", damaged, sc)
	}
	sc2, _ := scanSegment(bytes.NewReader(again), int64(len(again)), true, 0, 0)
	if sc2.Count != sc.Count || sc2.End != sc.End || sc2.Cut != nil || sc2.Damaged != sc.Damaged {
		t.Fatalf("scan of the records encoded again: %+v, first scan %+v", sc2, sc)
	}
}
