// Package store keeps kvs streams and their fragments: a registry of streams and, per stream, an
// append-only log of fragment records with an index by fragment number and by server and producer
// timestamps. Two implementations share one behaviour suite: Mem (tests and reference; it keeps
// everything in memory and follows the same rules) and FS (the embedded default: segment files
// plus a bbolt index), whose design follows.
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
// header) followed by the payload given to Append. A stream rolls to a new segment before one
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
// Append returns nil only after its record is fdatasynced in its segment and its index entry is
// committed in bbolt, in that order, so the index never points at data that might not survive a
// crash. Appends from all streams share the fdatasyncs and bbolt commits of a batch: see the
// comment in append.go.
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
// # Retention
//
// EnforceRetention deletes, per stream, the leading segments whose newest server time is older
// than RetentionHours, index first, files after, and records the highest deleted segment so a
// crash in between cannot bring files back. A retention-0 stream stores nothing: Append
// returns ErrNoRetention (the server keeps such fragments only in its live buffer).
package store
