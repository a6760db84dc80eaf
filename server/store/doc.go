// Package store keeps kvs streams and their fragments: a registry of streams and, per stream, an
// append-only log of fragment records with an index by fragment number and by server and producer
// timestamps. Store is the interface the server uses; this comment is its contract, which a
// backend meets when the behaviour suite in package storetest passes over it. Two backends ship:
// Mem (tests and reference; everything in memory, nothing survives Close) and FS (the embedded
// default: segment files plus a bbolt index), whose design follows the contract.
//
// # The contract
//
// Concurrency. Every method is safe for concurrent use. Stream names are validated by the server
// ("." and ".." included) and never need escaping by the store.
//
// Registry. CreateStream fails with ErrStreamExists when the name is taken. GetStream and
// ListStreams (sorted by name) return copies: changing them, their Tags included, changes nothing
// stored. UpdateStream is an atomic read-modify-write: fn sees the current stream, and nothing
// else changes it between what fn saw and what is stored (fn may not rename the stream); the
// server's tag merges and version checks rely on that instead of a lock of their own. DeleteStream(name, version) deletes only if
// the stream's Version is version ("" = any), in the same atomic step (ErrVersionMismatch when
// not); it removes the stream's fragments with it, and a stream created again under the name
// starts empty.
//
// Numbers. NextNumber hands out the stream's fragment numbers: from 1, increasing, never twice,
// whether or not a number was appended, also across restarts and across processes that own the
// stream in turn. Numbers may be skipped (FS reserves blocks of 1000 and skips the rest of a
// block at restart; a cluster backend reserving blocks under a lease does the same when the
// lease moves). A purge never makes a number available again.
//
// Appends. AppendAsync(meta) stores one fragment whose meta.Number came from NextNumber and is
// above the stream's previous append; the stored Size is len(data), times are stored as given
// (see Times) and data is not retained. One stream's appends come from one writer at a time, in
// number order; the next AppendAsync may start as soon as the previous one has returned, before
// its wait. Appends to different streams may run concurrently. Refusals come from AppendAsync
// itself, with a nil wait, and store nothing and consume nothing (the number can be appended
// again): ErrStreamNotFound, ErrNoRetention (a retention-0 stream keeps nothing),
// ErrNumberOrder (not reserved, or not above the previous append), ErrRecordTooLarge (over
// MaxRecordSize), ErrClosed, or ctx.Err() when ctx had already ended.
//
// Durability. wait returns nil only once the fragment and its index entry are durable: they
// survive a crash of the process or the machine (FS: fdatasync of the segment, then the bbolt
// commit; a cluster backend: the object PUT, then the index commit that points at it, in that
// order, so the index never points at bytes that might be lost) and are visible to every read.
// Durability comes in append order per stream: once the wait of fragment n returns nil, every
// earlier fragment of the stream whose append did not fail is durable and readable too. A
// fragment may become readable before its wait returns, but only whole. A failed wait (I/O
// error, ErrStreamNotFound after a concurrent DeleteStream) means the fragment is not
// acknowledged; it may still turn up after a restart (FS re-indexes a complete record it finds
// after the last indexed one), which is what a KVS producer expects after a lost ack. If the ctx
// given to wait ends first, wait returns ctx.Err() and the fragment may or may not be stored. wait may be called at most once, and need not be called at all. Append is
// AppendAsync followed by wait, for callers with nothing to overlap. Close waits for the appends
// in flight: once it returns, those that did not fail are durable.
//
// Prepare. The server calls Prepare when an upload starts, before the first fragment has
// arrived, so that the work the first append would do on the way to durable happens meanwhile.
// Prepare may reserve numbers, open or create files, and take ownership of the stream's appends
// (the cluster backend's lease, which also makes it the stream's one writer); it may also do
// nothing. It never changes what readers see, may be called any number of times, before or
// between appends and on a retention-0 stream, and returns ErrStreamNotFound for a missing
// stream. Appends must work without it. This package defines no error for "another process owns
// the stream": a backend with owners returns its own from Prepare, NextNumber or AppendAsync, and
// today the server answers it as any store failure (ERROR 5000 from NextNumber, 5001 from an
// append; Prepare's error is only logged).
//
// Reads. Fragment, Open, AppendPayload, Range, TimeRange, First and Last see durable fragments
// (and possibly whole ones whose wait has not returned yet). Open's reader stays valid when the
// fragment is purged or its stream deleted after Open returned (FS keeps the file open; a
// backend on object storage can read eagerly or delete objects late). AppendPayload appends the
// same bytes Open returns to the caller's buffer, with the same checks, and returns the buffer
// unchanged on error. ErrCorrupt reports stored bytes that fail their check: FS returns it from
// Open (or the final Read of a large record) and AppendPayload rather than bad bytes.
//
// Times. ServerTime and ProducerTime come back in UTC and equal (time.Equal) to what was
// appended; the zero time.Time is "unknown" and comes back zero, sorting before every other
// time in TimeRange. FS and Mem keep nanoseconds; a backend must keep at least the
// milliseconds the server stores (it truncates both times to the millisecond).
//
// Retention. EnforceRetention(now) deletes fragments whose ServerTime is before now minus their
// stream's RetentionHours and returns how many it deleted. It never deletes a fragment at or
// after that cutoff, but may delete an expired one later (FS deletes a segment once its newest
// fragment has expired, up to MaxSegmentAge late; Mem is exact), and it may keep fragments that
// are not durable yet for a later pass. A stream whose retention was lowered to 0 loses
// everything older than now. Deleted fragments are gone from every read. The store takes time
// from now only and runs retention on no schedule of its own: the server calls it every
// Config.RetentionInterval and after a retention decrease.
//
// Byte caps. A stream tagged kvs:max-bytes (MaxBytesTag, a kvs extension; the value is a size as
// ParseSize reads it) keeps the newest fragments whose payloads fit the cap, and always its newest
// fragment: the store deletes the older ones, oldest first, before retention would, at the latest
// in the next EnforceRetention (FS and Mem as soon as an append passes the cap; FS in whole
// segments, which it sizes to an eighth of the cap). A cap lowered later applies at the next
// EnforceRetention; a cap never makes an append fail. EnforceRetention's count leaves out what
// caps delete. Reads treat fragments a cap deleted as retention's: gone from every read.
//
// Health and size. Ready reports whether the store can take appends now (nil), else what is wrong:
// FS writes and fdatasyncs a probe file in its directory; a cluster pings PostgreSQL and the
// object store. Stats counts the streams, the fragments that Range would list and the bytes they
// take (at least their payloads). Both return ErrClosed after Close.
//
// Errors. Sentinels, matched with errors.Is: ErrStreamNotFound (no such stream; also from
// appends in flight when the stream is deleted), ErrStreamExists, ErrVersionMismatch
// (DeleteStream's check), ErrFragmentNotFound (no such fragment, purged, or an empty stream's
// First/Last), ErrNoRetention, ErrNumberOrder, ErrRecordTooLarge, ErrCorrupt and ErrClosed
// (every call after Close except Close, which returns nil). An error returned by UpdateStream's
// fn is returned as is. Anything else is a backend failure, which the server answers as an
// internal error (or ERROR 5001 for an append).
//
// # FS layout
//
//	<dir>/index.db                              bbolt: stream registry + fragment index
//	<dir>/streams/<id %016x>/<seq %016x>.seg   per-stream append-only segment files
//
// Streams are named on disk by an internal numeric id from a persisted counter, never by their
// name: names such as ".." never reach the filesystem, and a stream deleted and created again
// gets a new id, so it cannot see the old stream's files.
//
// # Segments
//
// A segment is a sequence of records (record.go): a 48-byte header (magic, payload length,
// fragment number, server and producer time, duration, CRC-32C of the payload, CRC-32C of the
// header) followed by the payload given to AppendAsync. A stream rolls to a new segment before one
// would pass FSOptions.MaxSegmentBytes (64 MiB) or once the current one is MaxSegmentAge (1 h)
// old, and after every restart, so retention deletes whole files and never rewrites one. The
// header repeats the index entry, so records can be re-indexed after a crash.
//
// # Why bbolt and not Pebble
//
// The index is small (tens of bytes per fragment, a few fragments per second per stream) and
// read far more than written: ListFragments and GetMedia are ordered range scans by number or
// by (timestamp, number). bbolt is a single-file copy-on-write B+tree with ordered cursors, so
// a range scan is a seek plus sequential leaf reads from the mmap (about 1 ms for 1000 of
// 1 M fragments here, see BenchmarkTimeRange). Its crash semantics are simple: a committed
// transaction is durable (commit fsyncs), an uncommitted one never happened, and there is no
// log to replay or compaction to schedule. It is pure Go and already in go.mod. Pebble's LSM
// wins on write throughput, which does not matter at fragment rates, and brings background
// compactions, a WAL and many files to the table. Group commit (append.go) takes care of the
// one weak spot, bbolt's cost per commit.
//
// # Durability and group commit
//
// An append's wait returns nil only after its record is fdatasynced in its segment and its index
// entry is committed in bbolt, in that order, so the index never points at data that might not
// survive a crash. Appends from all streams share the batches of fdatasyncs and the bbolt
// commits, but an append waits only for its own segment's fdatasync and its stream's earlier
// appends, not for the slowest file of its batch: see the comment in append.go.
//
// A failed fdatasync fails more than its own records. Linux reports a failed writeback to one
// fsync of the file and marks the lost pages clean, so another fdatasync of the same segment,
// beside it or after it, returns nil for records that may be gone. A segment whose fdatasync
// failed takes no more records, and a record is acknowledged only once every fdatasync of its
// segment that began before its own ended has ended, with none of them failed (segment.settled);
// the others fail (the producer sends them again). Under an I/O error, a record that did reach
// the disk may be failed too; none that may not have is acknowledged.
//
// Once its fdatasync is done, a record's pages are counted in the written cache
// (pagecache.go): past FSOptions.WrittenCacheBytes (1 GiB) of newer ones they are dropped from
// the page cache (POSIX_FADV_DONTNEED), so ingest reuses memory instead of growing the cache by
// every byte it writes. Only pages already on disk are dropped; reads find the data on disk.
//
// Fragment numbers come from NextNumber, which persists a high-water mark numberBlock (1000)
// ahead of the numbers handed out; after a restart numbering resumes at the mark, so a number
// is never handed out twice. The gap this leaves is allowed by KVS (numbers only increase).
//
// # Recovery
//
// OpenFS reconciles each stream's segments with the index (recover.go): entries of missing
// segments or past a segment's end are dropped; records after the last indexed one are checked
// and, when complete and correctly numbered, indexed (they were durable but never acknowledged:
// keeping them loses nothing, and a duplicate of an unacknowledged fragment is what KVS
// producers already expect after a lost ack); the first torn or corrupt record is truncated
// away with everything after it. Every repair is returned by Recovered and logged. Damage in
// the middle of a segment is not looked for at open (that would read every byte); Open checks
// each record's CRC when it is read.
//
// # Disk quota
//
// FSOptions.MaxDiskBytes caps what the store takes on disk (segment files and index), and
// FSOptions.MaxDiskPercent the use of the filesystem under it (every file on it counted, as df
// does). The append that would pass either first deletes the oldest segments across all streams
// (the segment whose newest fragment is oldest, which is the one retention would delete first),
// through the same purge as retention, then writes: ingest never waits for anything but those
// deletions and is never refused for old data. Segments are sized to a sixteenth of the quota, so
// a deletion frees a small step and the directory stays within the quota, plus the records still
// being committed (which cannot go yet) and the index's growth. quota.go has the details; each
// deletion is logged and counted (kvs_store_deleted_fragments_total{reason="disk_quota"}).
//
// # Retention
//
// EnforceRetention deletes, per stream, the segments whose newest server time is older than
// RetentionHours (not only leading ones: a segment written while the clock was ahead does not
// keep the later ones), index first, files after, and records the highest deleted segment so a
// crash in between cannot bring files back. A segment with appends still being committed is
// kept for the next pass. A large purge (a retention decrease on a long stream) commits in steps
// of whole segments, about 20,000 fragments each, so the other streams' index commits, and
// their acks, go on in between and the purge's memory stays bounded; the stream itself is
// released between the steps, so its own appends wait for one step at most. A retention-0 stream stores nothing: AppendAsync returns
// ErrNoRetention (the server keeps such fragments only in its live buffer).
package store
