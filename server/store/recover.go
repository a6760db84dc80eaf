package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/openkvs/kvs/internal/fsync"
	"github.com/openkvs/kvs/internal/record"
)

// RecoveryReport describes one repair OpenFS made to a stream's segments or index.
type RecoveryReport struct {
	Stream    string
	Segment   string // segment file path
	Offset    int64  // where the cut, or the first affected record, starts
	BytesCut  int64  // bytes truncated from the end of the segment
	Dropped   int    // index entries removed because their record is gone
	Reindexed int    // complete records found after the last indexed one and indexed
	Reason    string
}

func (r RecoveryReport) attrs() []any {
	return []any{"stream", r.Stream, "segment", r.Segment, "offset", r.Offset, "bytes_cut", r.BytesCut,
		"dropped", r.Dropped, "reindexed", r.Reindexed, "reason", r.Reason}
}

func (s *FS) report(r RecoveryReport) {
	s.recovered = append(s.recovered, r)
	level := slog.LevelWarn
	if r.Reindexed > 0 && r.BytesCut == 0 && r.Dropped == 0 {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "store recovery", r.attrs()...)
}

// listSegments returns the segment files of a stream directory by sequence number.
func listSegments(dir string) (map[uint64]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[uint64]string{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || len(name) != 16 || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		out[seq] = filepath.Join(dir, e.Name())
	}
	return out, nil
}

// recoverStream reconciles one stream's segment files with its index and sets its in-memory
// state. The rules, applied in one bbolt transaction:
//
//   - a segment file listed in the index but missing: its entries go (reported as Dropped);
//   - a file at or below the retention mark that is not indexed: leftover of an interrupted
//     purge, removed silently;
//   - index entries past a segment's end: removed (Dropped);
//   - after a segment's last indexed record, each complete, checksummed record numbered above
//     every indexed fragment is indexed (Reindexed). Such a record was fdatasynced but the crash
//     came before its index commit, so the producer never got an ack; keeping it loses nothing
//     and matches what a rebuild of the index from the segments would give. The first torn,
//     corrupt or out-of-order record and everything after it are truncated (BytesCut);
//   - an empty, unindexed segment file is removed.
func (s *FS) recoverStream(st *fsStream) error {
	files, err := listSegments(st.dir)
	if err != nil {
		return err
	}
	name := st.info.Name
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := createDataBucket(tx, st.id)
		if err != nil {
			return err
		}
		hwm, purged := getU64(b.Get(keyHWM)), getU64(b.Get(keyPurged))
		gb := b.Bucket(bucketSegs)
		infos := map[uint64]segmentInfo{}
		maxSeq := purged
		err = gb.ForEach(func(k, v []byte) error {
			info, err := decodeSegmentInfo(v)
			if err != nil {
				return fmt.Errorf("segment %x summary: %w", k, err)
			}
			infos[getU64(k)] = info
			maxSeq = max(maxSeq, getU64(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, seq := range slices.Sorted(mapsKeys(infos)) {
			if _, ok := files[seq]; ok {
				continue
			}
			n, _, err := removeSegmentEntries(b, seq, infos[seq], -1)
			if err != nil {
				return err
			}
			if err := gb.Delete(u64(seq)); err != nil {
				return err
			}
			delete(infos, seq)
			s.report(RecoveryReport{Stream: name, Segment: filepath.Join(st.dir, segmentName(seq)), Dropped: n,
				Reason: "segment file missing"})
		}
		for seq, path := range files {
			if _, ok := infos[seq]; !ok && seq <= purged {
				if err := os.Remove(path); err != nil {
					return err
				}
				delete(files, seq)
			}
		}
		maxIndexed := lastNumber(b)
		for _, seq := range slices.Sorted(mapsKeys(files)) {
			maxSeq = max(maxSeq, seq)
			if maxIndexed, err = s.recoverSegment(b, st, seq, files[seq], infos, maxIndexed); err != nil {
				return fmt.Errorf("segment %s: %w", files[seq], err)
			}
		}
		st.hwm = hwm
		st.next = max(hwm, maxIndexed+1)
		st.last = maxIndexed
		st.nextSeq = maxSeq + 1
		return nil
	})
}

func mapsKeys[V any](m map[uint64]V) func(func(uint64) bool) {
	return func(yield func(uint64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func lastNumber(b *bolt.Bucket) uint64 {
	k, _ := b.Bucket(bucketNumber).Cursor().Last()
	return getU64(k)
}

// recoverSegment checks one segment file's tail against the index; it returns the new highest
// indexed fragment number of the stream.
func (s *FS) recoverSegment(b *bolt.Bucket, st *fsStream, seq uint64, path string, infos map[uint64]segmentInfo, maxIndexed uint64) (uint64, error) {
	f, err := openSegment(path, os.O_RDWR)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	name := st.info.Name
	info, indexed := infos[seq]
	if indexed && info.End > size {
		n, rest, err := removeSegmentEntries(b, seq, info, size)
		if err != nil {
			return 0, err
		}
		info = rest
		if err := s.putSegmentInfo(b, seq, info); err != nil {
			return 0, err
		}
		indexed = info.Count > 0
		maxIndexed = lastNumber(b)
		s.report(RecoveryReport{Stream: name, Segment: path, Offset: size, Dropped: n,
			Reason: "index entries past the end of the segment"})
	}
	off := info.End
	reindexed, firstNew := 0, off
	for off < size {
		h, n, err := readRecord(f, off, size)
		if err == nil && h.Number <= maxIndexed {
			err = fmt.Errorf("stale record: fragment %d is not after indexed fragment %d", h.Number, maxIndexed)
		} else if err != nil && !record.IsDamage(err) {
			return 0, err
		}
		if err != nil {
			if err := f.Truncate(off); err != nil {
				return 0, err
			}
			if err := fsync.Data(f); err != nil {
				return 0, err
			}
			s.report(RecoveryReport{Stream: name, Segment: path, Offset: off, BytesCut: size - off, Reason: err.Error()})
			size = off
			break
		}
		e := indexEntry{Number: h.Number, Segment: seq, Offset: off, Size: int64(h.Length),
			ServerNanos: h.ServerNanos, ProducerNanos: h.ProducerNano, Duration: h.Duration}
		if err := putEntry(b, e); err != nil {
			return 0, err
		}
		info.add(e)
		indexed = true
		maxIndexed = h.Number
		reindexed++
		off += n
	}
	if reindexed > 0 {
		s.report(RecoveryReport{Stream: name, Segment: path, Offset: firstNew, Reindexed: reindexed,
			Reason: "complete records missing from the index (never acknowledged)"})
	}
	if !indexed && size == 0 {
		// Closed first: Windows does not remove a file that is open (os.Open does not share it
		// for deletion), and kvs server then refused to start ("Sharing violation") after a
		// PutMedia had prepared a segment that got no fragment. The deferred Close does nothing.
		f.Close()
		if err := os.Remove(path); err != nil {
			return 0, err
		}
	}
	return maxIndexed, nil
}

func (s *FS) putSegmentInfo(b *bolt.Bucket, seq uint64, info segmentInfo) error {
	if info.Count == 0 {
		return b.Bucket(bucketSegs).Delete(u64(seq))
	}
	return b.Bucket(bucketSegs).Put(u64(seq), info.encode())
}
