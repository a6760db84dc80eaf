// Package mkv reads and writes the Matroska (MKV/WebM) that Kinesis Video Streams moves around:
// PutMedia bodies, GetMedia chunk streams, and continuous streams for players. It imports only
// the standard library and internal/bufpool, the buffer pool of kvs (itself standard library only:
// a leaf below every package, so that the FragmentReader's arenas and the buffers of the client
// and server that hold fragments are one pool); ebml-go is used in tests only, as an independent
// parser to cross-check against.
//
// # Reading
//
// Reader is an incremental pull parser (Next returns one Event at a time) over any io.Reader,
// including a live HTTP body. It reads a concatenation of documents (EBML header + Segment,
// repeated), which is what GetMedia returns, and Segments and Clusters of known or unknown size.
// An unknown-size element ends where an element that cannot be its child starts: a Cluster at the
// next Cluster, Tags, Cues, Info, Tracks, SeekHead, Chapters, Attachments, Segment or EBML header;
// a Segment at the next EBML header or Segment. A known-size Cluster ends as soon as its last byte
// is read, without waiting for more input, which matters for live latency.
//
// A caller that keeps frames as SimpleBlocks in a buffer of its own (the server's PutMedia) gives
// the Reader block memory (WithBlockMemory) and lends it that buffer to read ahead into
// (ReadAhead, Detach): a block read to the address it is given memory at is neither copied nor
// read in a read of its own.
//
// FragmentReader sits on Reader and groups events into Fragments: one Cluster with its segment's
// tracks and the level-1 Tags around it.
//
// # The chunk layout
//
// Each GetMedia chunk is one self-contained document (kvs-api.md §6.1):
//
//	EBML header
//	Segment (unknown size)
//	  Info, Tracks
//	  Tags: AWS_KINESISVIDEO_FRAGMENT_NUMBER, _SERVER_TIMESTAMP, _PRODUCER_TIMESTAMP
//	  Cluster (one fragment)
//	  Tags: AWS_KINESISVIDEO_MILLIS_BEHIND_NOW, _CONTINUATION_TOKEN
//
// AppendFragment writes exactly that; FragmentReader reads it back with Tags and TrailingTags,
// and delivers each chunk as soon as its continuation-token Tags arrive. ffmpeg plays such
// concatenations only while tracks do not change; mkvmerge rejects them. StreamWriter therefore
// writes players one continuous Segment (header once, one Cluster per fragment, timecodes rebased
// to start at 0). When only an H.264/H.265 track's parameter sets change (a camera's new picture
// size), it goes on in the same Segment with the new sets in-band; it starts a new Segment only
// when the tracks change otherwise (codec, track set, audio format).
//
// # Writing
//
// The writer is hand-written and append-style (AppendCluster, AppendTags, ...): it never
// allocates when the destination has capacity and runs at memory speed. ebml-go's writers were
// not used: its block writer cannot write Tags, reports success before the sink has written, and
// panics in a goroutine on fatal errors by default, and its marshaller runs at about
// 150-210 MB/s. Master element sizes are computed up front for Clusters and patched in for the
// small header elements; the only unknown size written is the Segment's.
//
// # Memory bounds
//
// The Reader never allocates from a size it has not checked: an element it materializes (EBML
// header, Info, Tracks: WithMaxElementSize, 64 MiB; a SimpleBlock or BlockGroup:
// WithMaxFrameSize, 50 MiB; Tags: WithMaxTagsSize, 1 MiB) larger than its cap fails with
// ErrElementTooLarge before any allocation, and even under the cap the buffer grows only as bytes
// actually arrive. Everything else (SeekHead, Cues, Void, CRC-32, Chapters, Attachments, unknown
// elements) is skipped without allocating. Frames are returned in one reused buffer, so reading
// allocates nothing per frame in steady state. FragmentReader adds WithMaxFragmentSize (50 MiB of
// frame and tag bytes per fragment). IDs longer than 4 bytes and sizes longer than 8 are
// rejected; every error is a *SyntaxError carrying the offset and element ID.
package mkv
