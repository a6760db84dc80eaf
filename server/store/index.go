package store

import (
	"encoding/binary"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The bbolt layout (keys big-endian so byte order is numeric order):
//
//	streams/<name>             JSON streamRecord: the registry
//	meta/nextID                next internal stream id (uint64)
//	retired/<name>             the hwm of the last stream deleted under the name: where the
//	                           numbers of a stream created again under it start (NextNumber)
//	d<id>/                     one bucket per stream id (8 bytes), deleted whole with the stream
//	  hwm                      fragment numbers below this may have been handed out
//	  purged                   highest segment sequence deleted by retention
//	  n/<number>               indexEntry
//	  s/<server ns><number>    indexEntry (time keys: int64 with the sign bit flipped)
//	  p/<producer ns><number>  indexEntry
//	  g/<segment seq>          segmentInfo
//
// The secondary keys carry the whole entry so a time range is one cursor scan.
var (
	bucketStreams = []byte("streams")
	bucketMeta    = []byte("meta")
	keyNextID     = []byte("nextID")
	bucketRetired = []byte("retired")
	keyHWM        = []byte("hwm")
	keyPurged     = []byte("purged")
	bucketNumber  = []byte("n")
	bucketServer  = []byte("s")
	bucketProd    = []byte("p")
	bucketSegs    = []byte("g")
)

func dataBucketName(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'d'}, id)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// timeIndexKey orders by (nanos, number).
func timeIndexKey(nanos int64, number uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(nanos)^(1<<63))
	return binary.BigEndian.AppendUint64(k, number)
}

func decodeTimeIndexKey(k []byte) (int64, uint64, bool) {
	if len(k) != 16 {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)), binary.BigEndian.Uint64(k[8:]), true
}

// indexEntry locates one record and repeats its metadata.
type indexEntry struct {
	Number        uint64 // from the key
	Segment       uint64 // segment sequence number
	Offset        int64  // record start (header) in the segment
	Size          int64  // payload bytes
	ServerNanos   int64
	ProducerNanos int64
	Duration      int64
}

const indexEntrySize = 48

// maxSegmentOffset bounds a decoded record offset so offset arithmetic cannot overflow.
const maxSegmentOffset = 1 << 62

var errBadEntry = errors.New("store: malformed index entry")

func (e indexEntry) encode() []byte {
	b := make([]byte, 0, indexEntrySize)
	b = binary.BigEndian.AppendUint64(b, e.Segment)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Offset))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(e.ServerNanos))
	b = binary.BigEndian.AppendUint64(b, uint64(e.ProducerNanos))
	return binary.BigEndian.AppendUint64(b, uint64(e.Duration))
}

func decodeIndexEntry(number uint64, b []byte) (indexEntry, error) {
	if len(b) != indexEntrySize {
		return indexEntry{}, errBadEntry
	}
	e := indexEntry{
		Number:        number,
		Segment:       binary.BigEndian.Uint64(b),
		Offset:        int64(binary.BigEndian.Uint64(b[8:])),
		Size:          int64(binary.BigEndian.Uint64(b[16:])),
		ServerNanos:   int64(binary.BigEndian.Uint64(b[24:])),
		ProducerNanos: int64(binary.BigEndian.Uint64(b[32:])),
		Duration:      int64(binary.BigEndian.Uint64(b[40:])),
	}
	if e.Offset < 0 || e.Offset > maxSegmentOffset || e.Size < 0 || e.Size > MaxRecordSize {
		return indexEntry{}, errBadEntry
	}
	return e, nil
}

// end is the segment offset just past the record.
func (e indexEntry) end() int64 { return e.Offset + recordHeaderSize + e.Size }

func (e indexEntry) meta() FragmentMeta {
	return FragmentMeta{
		Number:       e.Number,
		ServerTime:   nanosToTime(e.ServerNanos),
		ProducerTime: nanosToTime(e.ProducerNanos),
		Duration:     timeDuration(e.Duration),
		Size:         e.Size,
	}
}

func timeDuration(ns int64) time.Duration { return time.Duration(ns) }

// segmentInfo summarizes the indexed records of one segment.
type segmentInfo struct {
	First, Last uint64 // fragment numbers
	Count       uint64
	End         int64 // offset just past the last indexed record
	MaxServer   int64 // newest server time, Unix ns: retention drops the segment after it
}

const segmentInfoSize = 40

func (s segmentInfo) encode() []byte {
	b := make([]byte, 0, segmentInfoSize)
	b = binary.BigEndian.AppendUint64(b, s.First)
	b = binary.BigEndian.AppendUint64(b, s.Last)
	b = binary.BigEndian.AppendUint64(b, s.Count)
	b = binary.BigEndian.AppendUint64(b, uint64(s.End))
	return binary.BigEndian.AppendUint64(b, uint64(s.MaxServer))
}

func decodeSegmentInfo(b []byte) (segmentInfo, error) {
	if len(b) != segmentInfoSize {
		return segmentInfo{}, errBadEntry
	}
	s := segmentInfo{
		First:     binary.BigEndian.Uint64(b),
		Last:      binary.BigEndian.Uint64(b[8:]),
		Count:     binary.BigEndian.Uint64(b[16:]),
		End:       int64(binary.BigEndian.Uint64(b[24:])),
		MaxServer: int64(binary.BigEndian.Uint64(b[32:])),
	}
	if s.End < 0 || s.First > s.Last {
		return segmentInfo{}, errBadEntry
	}
	return s, nil
}

// add extends s with e.
func (s *segmentInfo) add(e indexEntry) {
	if s.Count == 0 {
		s.First, s.MaxServer = e.Number, e.ServerNanos
	}
	s.Count++
	s.Last = max(s.Last, e.Number)
	s.End = max(s.End, e.end())
	s.MaxServer = max(s.MaxServer, e.ServerNanos)
}

// createDataBucket makes a stream's data bucket with its sub-buckets.
func createDataBucket(tx *bolt.Tx, id uint64) (*bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(dataBucketName(id))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketNumber, bucketServer, bucketProd, bucketSegs} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// putEntry indexes e under the three keys and extends its segment's summary.
func putEntry(b *bolt.Bucket, e indexEntry) error {
	v := e.encode()
	nb, sb, pb, gb := b.Bucket(bucketNumber), b.Bucket(bucketServer), b.Bucket(bucketProd), b.Bucket(bucketSegs)
	// Keys arrive nearly in order: pack pages fuller than bbolt's default half.
	nb.FillPercent, sb.FillPercent, pb.FillPercent = 0.9, 0.9, 0.9
	if err := nb.Put(u64(e.Number), v); err != nil {
		return err
	}
	if err := sb.Put(timeIndexKey(e.ServerNanos, e.Number), v); err != nil {
		return err
	}
	if err := pb.Put(timeIndexKey(e.ProducerNanos, e.Number), v); err != nil {
		return err
	}
	var info segmentInfo
	if old := gb.Get(u64(e.Segment)); old != nil {
		var err error
		if info, err = decodeSegmentInfo(old); err != nil {
			return err
		}
	}
	info.add(e)
	return gb.Put(u64(e.Segment), info.encode())
}

// removeSegmentEntries deletes the index entries of segment seq whose record ends past keepEnd
// (keepEnd < 0: all of them) and returns how many went and the summary of the rest.
func removeSegmentEntries(b *bolt.Bucket, seq uint64, info segmentInfo, keepEnd int64) (int, segmentInfo, error) {
	nb := b.Bucket(bucketNumber)
	var drop []indexEntry
	var rest segmentInfo
	c := nb.Cursor()
	for k, v := c.Seek(u64(info.First)); k != nil && getU64(k) <= info.Last; k, v = c.Next() {
		e, err := decodeIndexEntry(getU64(k), v)
		if err != nil {
			return 0, rest, err
		}
		if e.Segment != seq {
			continue
		}
		if keepEnd >= 0 && e.end() <= keepEnd {
			rest.add(e)
			continue
		}
		drop = append(drop, e)
	}
	for _, e := range drop {
		if err := nb.Delete(u64(e.Number)); err != nil {
			return 0, rest, err
		}
		if err := b.Bucket(bucketServer).Delete(timeIndexKey(e.ServerNanos, e.Number)); err != nil {
			return 0, rest, err
		}
		if err := b.Bucket(bucketProd).Delete(timeIndexKey(e.ProducerNanos, e.Number)); err != nil {
			return 0, rest, err
		}
	}
	return len(drop), rest, nil
}
