package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openkvs/kvs/internal/fsync"
)

const benchRecord = 256 << 10

// BenchmarkAppend measures durable appends of 256 KiB records (NextNumber + Append, fdatasync
// and index commit included) from 1, 64 and 200 streams, one writer goroutine per stream.
func BenchmarkAppend(b *testing.B) {
	for _, streams := range []int{1, 64, 200} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			s, data := benchStreams(b, streams)
			ctx := context.Background()
			b.SetBytes(benchRecord)
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range streams {
				name := fmt.Sprintf("s%d", i)
				count := b.N / streams
				if i < b.N%streams {
					count++
				}
				wg.Go(func() {
					for range count {
						n, err := s.NextNumber(ctx, name)
						if err == nil {
							err = Append(ctx, s, name, FragmentMeta{Number: n, ServerTime: time.Now(), ProducerTime: time.Now()}, data)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frags/s")
			if n := s.statBatches.Load(); n > 0 {
				b.ReportMetric(float64(s.statAppends.Load())/float64(n), "appends/batch")
				b.ReportMetric(float64(s.statSyncs.Load())/float64(n), "fdatasyncs/batch")
			}
		})
	}
}

// benchStreams opens an FS store for b (closed at its end) with streams streams named s0, s1,
// ..., and returns it with a record of benchRecord bytes.
func benchStreams(b *testing.B, streams int) (*FS, []byte) {
	s := mustOpenFS(b, b.TempDir(), FSOptions{})
	b.Cleanup(func() { s.Close() })
	for i := range streams {
		mustCreate(b, s, fmt.Sprintf("s%d", i), 24)
	}
	return s, payload("x", 1, benchRecord)
}

// BenchmarkDiskFdatasync is the reference: write a 256 KiB chunk and fdatasync it, to one file
// or to 64 files concurrently, with no store in between.
func BenchmarkDiskFdatasync(b *testing.B) {
	for _, files := range []int{1, 64} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			dir := b.TempDir()
			data := payload("x", 1, benchRecord)
			b.SetBytes(benchRecord)
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range files {
				count := b.N / files
				if i < b.N%files {
					count++
				}
				wg.Go(func() {
					f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
					if err != nil {
						b.Error(err)
						return
					}
					defer f.Close()
					for range count {
						if _, err := f.Write(data); err != nil {
							b.Error(err)
							return
						}
						if err := fsync.Data(f); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// bulkIndex writes index entries for metas (in number order) straight into bbolt in large
// transactions, without segment data or segment summaries: enough to benchmark lookups. (With
// summaries, the next OpenFS would find the segment file missing and drop the entries.)
func (s *FS) bulkIndex(stream string, metas []FragmentMeta) error {
	st, _, err := s.lookup(stream)
	if err != nil {
		return err
	}
	s.db.NoSync = true
	defer func() { s.db.NoSync = false }()
	const perTx = 100_000
	for i := 0; i < len(metas); i += perTx {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(dataBucketName(st.id))
			for _, name := range [][]byte{bucketNumber, bucketServer, bucketProd} {
				b.Bucket(name).FillPercent = 1 // keys arrive in order
			}
			for _, m := range metas[i:min(i+perTx, len(metas))] {
				e := indexEntry{Number: m.Number, Segment: 1, Offset: int64(m.Number) * 1000, Size: m.Size,
					ServerNanos: timeToNanos(m.ServerTime), ProducerNanos: timeToNanos(m.ProducerTime), Duration: int64(m.Duration)}
				v := e.encode()
				if err := b.Bucket(bucketNumber).Put(u64(e.Number), v); err != nil {
					return err
				}
				if err := b.Bucket(bucketServer).Put(timeIndexKey(e.ServerNanos, e.Number), v); err != nil {
					return err
				}
				if err := b.Bucket(bucketProd).Put(timeIndexKey(e.ProducerNanos, e.Number), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	st.mu.Lock()
	st.last = metas[len(metas)-1].Number
	st.next = max(st.next, st.last+1)
	st.mu.Unlock()
	return nil
}

const benchFragments = 1_000_000

var bigIndex struct {
	once sync.Once
	dir  string
	err  error
}

// bigIndexDir builds, once per test binary run, a store whose stream "big" indexes 1 M
// fragments one second apart (server time) with producer time 2 s behind.
func bigIndexDir(b *testing.B) string {
	bigIndex.once.Do(func() {
		start := time.Now()
		dir, err := os.MkdirTemp("", "kvs-store-bench-")
		if err != nil {
			bigIndex.err = err
			return
		}
		bigIndex.dir = dir
		s, err := OpenFS(dir, FSOptions{})
		if err != nil {
			bigIndex.err = err
			return
		}
		defer s.Close()
		if err := s.CreateStream(context.Background(), Stream{Name: "big", RetentionHours: 24}); err != nil {
			bigIndex.err = err
			return
		}
		metas := make([]FragmentMeta, benchFragments)
		for i := range metas {
			ts := base.Add(time.Duration(i) * time.Second)
			metas[i] = FragmentMeta{Number: uint64(i + 1), ServerTime: ts, ProducerTime: ts.Add(-2 * time.Second), Duration: time.Second, Size: benchRecord}
		}
		bigIndex.err = s.bulkIndex("big", metas)
		b.Logf("built a %d-fragment index in %v", benchFragments, time.Since(start))
	})
	if bigIndex.err != nil {
		b.Fatal(bigIndex.err)
	}
	return bigIndex.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bigIndex.dir != "" {
		os.RemoveAll(bigIndex.dir)
	}
	os.Exit(code)
}

// BenchmarkTimeRange looks up 1000 consecutive fragments at a varying place in a 1 M fragment
// index. The budget is 20 ms per lookup.
func BenchmarkTimeRange(b *testing.B) {
	s := mustOpenFS(b, bigIndexDir(b), FSOptions{})
	defer s.Close()
	ctx := context.Background()
	for _, kind := range []TimeKind{ServerTime, ProducerTime} {
		b.Run(map[TimeKind]string{ServerTime: "server", ProducerTime: "producer"}[kind], func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % (benchFragments - 1000)
				start := base.Add(time.Duration(i) * time.Second)
				got, err := s.TimeRange(ctx, "big", kind, start, start.Add(time.Hour), Cursor{}, 1000)
				if err != nil || len(got) != 1000 {
					b.Fatalf("got %d, %v", len(got), err)
				}
			}
		})
	}
	b.Run("range", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchFragments - 1000)
			got, err := s.Range(ctx, "big", uint64(i+1), 1000)
			if err != nil || len(got) != 1000 {
				b.Fatalf("got %d, %v", len(got), err)
			}
		}
	})
}
