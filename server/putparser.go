package server

// The PutMedia body parser: MKV in, fragments (stored chunks with their metadata) out to the
// session's persister (putmedia.go), with the ERROR acks of every parse-time rule.

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/record"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// putParser turns the body into fragments. It owns the reusable frame buffers.
type putParser struct {
	p    *putSession
	jobs chan<- persistJob
	rd   *mkv.Reader // reads ahead into the open fragment's arena (ReadAhead) until Detach

	sawEBML bool
	docType string
	scale   uint64
	tracks  []mkv.Track

	producerTags     []mkv.SimpleTag // for the next fragment
	producerItems    int             // those of producerTags that are fragment metadata items, not event pairs
	producerTagBytes int64

	// the open fragment
	open        bool
	number      uint64
	timecode    int64 // raw cluster timecode
	clusterNS   int64 // cluster timecode × scale
	serverTime  time.Time
	frames      []mkv.Frame // without their Data, which is in arena
	arena       []byte      // headroom bytes (for the chunk's start), then the Cluster's frames
	headroom    int
	inPlace     int    // arena's length with the SimpleBlock blockMemory placed after it, 0: none
	inPlaceAt   int    // where that SimpleBlock element starts
	crc         uint32 // CRC-32C of the arena's frames, updated as each lands (while in the cache)
	prefix      []byte // the chunk's start, built at finish
	prevBody    int    // the previous fragment's frames, in bytes (the next arena's size)
	size        int64
	firstNS     int64
	sawVideo    bool
	fragTags    []mkv.SimpleTag
	fragTagSize int64
	last        []trackTime // latest frame time per track in the open fragment

	// the previous fragment of this connection
	havePrev      bool
	prevClusterNS int64
	prevLast      []trackTime
}

type trackTime struct {
	track uint64
	ns    int64
}

func lastFor(l []trackTime, track uint64) (int64, bool) {
	for _, t := range l {
		if t.track == track {
			return t.ns, true
		}
	}
	return 0, false
}

// parse reads the body to its end. It returns the ERROR to send, or nil.
func (ps *putParser) parse() *ackErr {
	p := ps.p
	// The Reader skips what it does not parse; for an upload, data before the EBML header or a
	// Cluster outside a Segment is invalid.
	var misplaced *ackErr
	skipped := func(id uint32, offset, _ int64) {
		if misplaced == nil && (!ps.sawEBML || id == mkv.IDCluster) {
			misplaced = ps.at(newAckErr(4006, "element %#x at offset %d outside an EBML document's Segment", id, offset))
			misplaced.Offset = offset
			p.mu.Lock()
			p.aborted = true // the Reader would go on to the next element: stop it
			p.mu.Unlock()
		}
	}
	// The input is read into the open fragment's arena (ReadAhead), where each SimpleBlock is
	// kept as it was read (blockMemory): a frame is neither copied nor read in a read of its own.
	// BenchmarkIngestCPU, server CPU per GB of bulk PutMedia, each change alternating with the
	// build before: a copy of every frame (64 KiB buffer) 1.14-1.21 s, frames read in place past a
	// 16 KiB buffer (two reads a frame) 0.96-1.04; then, on another day, that build 1.04-1.18 s
	// (1.82-1.85x the reference handler) and read-ahead 1.00-1.07 s (1.58-1.61x), with 5 read(2)
	// calls per MB instead of 26 (kvs-reads/MB).
	rd := mkv.NewReader(p, mkv.WithMaxFrameSize(p.m.maxFragmentSize), mkv.WithMaxTagsSize(mkv.DefaultMaxTagsSize),
		mkv.WithMaxElementSize(1<<20), mkv.WithSkipHandler(skipped), mkv.WithBlockMemory(ps.blockMemory),
		mkv.WithBufferSize(16<<10))
	ps.rd = rd
	for {
		ev, err := rd.Next()
		if misplaced != nil {
			if ps.open {
				ps.abandon()
			}
			return misplaced
		}
		if err == io.EOF { //nolint:errorlint // Reader returns io.EOF unwrapped at a clean end
			if ps.open { // cannot happen: the Reader ends an open cluster before EOF
				return ps.finish()
			}
			return nil
		}
		if err != nil {
			return ps.readFailed(err, rd.Offset())
		}
		if e := ps.event(ev, rd); e != nil {
			if e.Offset < 0 {
				e.Offset = ev.Offset
			}
			return e
		}
	}
}

// readFailed maps a Reader error to the ERROR ack: it names the open fragment, if any (a body
// that breaks between fragments names none), and the offset of the element at fault.
func (ps *putParser) readFailed(err error, offset int64) *ackErr {
	p := ps.p
	p.mu.Lock()
	readErr, stalled := p.readErr, p.stalled
	p.mu.Unlock()
	var e *ackErr
	switch {
	case p.isDraining():
		e = newAckErr(5000, "server shutting down")
	case stalled > 0:
		e = newAckErr(4000, "the producer sent nothing for %v inside this fragment while another upload of the stream waited for it", stalled)
	case readErr != nil:
		e = newAckErr(4000, "reading the body: %v", readErr)
	case errors.Is(err, mkv.ErrElementTooLarge) && isBlock(err):
		e = newAckErr(4001, "%v", err)
	default:
		e = newAckErr(4006, "%v", err)
	}
	e.Offset = offset
	if se := (*mkv.SyntaxError)(nil); errors.As(err, &se) {
		e.Offset = se.Offset
	}
	if ps.open {
		ps.at(e)
		ps.abandon()
	}
	return e
}

// at makes e point at the open fragment, if any, and returns e.
func (ps *putParser) at(e *ackErr) *ackErr {
	if ps.open {
		e.fragment(ps.number, ps.timecode)
	}
	return e
}

func isBlock(err error) bool {
	var se *mkv.SyntaxError
	return errors.As(err, &se) && (se.ID == mkv.IDSimpleBlock || se.ID == mkv.IDBlockGroup || se.ID == mkv.IDCluster)
}

// abandon gives up the open fragment: its number is never used.
func (ps *putParser) abandon() {
	ps.rd.Detach()
	bufpool.Put(ps.arena)
	ps.arena = nil
	ps.open = false
	ps.p.setFragOpen(false)
	ps.p.buf.seq.done(ps.number)
}

// fragErr abandons the open fragment and returns an ERROR that names it.
func (ps *putParser) fragErr(id int, format string, a ...any) *ackErr {
	e := ps.at(newAckErr(id, format, a...))
	if ps.open {
		ps.abandon()
	}
	return e
}

func (ps *putParser) event(ev *mkv.Event, rd *mkv.Reader) *ackErr {
	switch ev.Kind {
	case mkv.EventEBMLHeader:
		ps.sawEBML = true
		ps.docType = ev.DocType
		ps.tracks = nil
		ps.scale = mkv.DefaultTimecodeScale
	case mkv.EventSegment:
		ps.scale = mkv.DefaultTimecodeScale
		ps.tracks = nil
	case mkv.EventInfo:
		ps.scale = ev.TimecodeScale
	case mkv.EventTracks:
		ps.tracks = ev.Tracks // replaced, never modified, by the Reader
	case mkv.EventCluster:
		return ps.startFragment(ev.Timecode)
	case mkv.EventFrame:
		return ps.frame(&ev.Frame)
	case mkv.EventClusterEnd:
		if ps.open {
			return ps.finish()
		}
	case mkv.EventTags:
		kept := len(ps.producerTags)
		for _, t := range ev.Tags {
			event := isEventTag(&t)
			for _, st := range t.SimpleTags {
				if st.Name == mkv.TagEndOfFragment {
					continue // consumed: the cluster before it has already ended
				}
				ps.producerTags = append(ps.producerTags, st)
				if !event {
					ps.producerItems++
				}
			}
		}
		if ps.producerItems > maxProducerTagsPerFrag {
			return newAckErr(4009, "%d producer metadata items for one fragment, at most %d", ps.producerItems, maxProducerTagsPerFrag)
		}
		if len(ps.producerTags) > maxProducerSimpleTags {
			return newAckErr(4009, "%d producer tags for one fragment, at most %d", len(ps.producerTags), maxProducerSimpleTags)
		}
		if len(ps.producerTags) > kept {
			// What the next fragment's chunk holds of them (at most 10 tags of a 1 MiB Tags
			// each), not the bytes of the Tags elements: those may be any number of consumed
			// END_OF_FRAGMENT markers or empty Tags, which must reserve nothing.
			ps.producerTagBytes = int64(len(mkv.AppendTags(nil, ps.producerTags...)))
		}
	}
	return nil
}

// isEventTag reports whether t is an event as the C producer (PIC) writes one
// (putKinesisVideoEventMetadata): the event's SimpleTag (AWS_KINESISVIDEO_NOTIFICATION or
// AWS_KINESISVIDEO_IMAGE_GENERATION) and, in the same Tag, its image prefix and up to 10
// name/value pairs. Those pairs are part of the event, not fragment metadata items of their own.
func isEventTag(t *mkv.Tag) bool {
	for i := range t.SimpleTags {
		if n := t.SimpleTags[i].Name; n == mkv.TagNotification || n == mkv.TagImageGeneration {
			return true
		}
	}
	return false
}

// startFragment opens a fragment at a cluster start. An error here belongs to that cluster,
// which has no number yet: the ERROR carries its timecode only.
func (ps *putParser) startFragment(timecode int64) *ackErr {
	if e := ps.openFragment(timecode); e != nil {
		return e.fragment(0, timecode)
	}
	return nil
}

func (ps *putParser) openFragment(timecode int64) *ackErr {
	p := ps.p
	switch {
	case !ps.sawEBML || ps.tracks == nil:
		return newAckErr(4006, "cluster at timecode %d before the EBML header and Tracks", timecode)
	case len(ps.tracks) > 3:
		return newAckErr(4012, "%d tracks, at most 3", len(ps.tracks))
	}
	clusterNS, ok := ps.nanos(timecode)
	if !ok {
		return newAckErr(4007, "cluster timecode %d overflows at scale %d", timecode, ps.scale)
	}
	if ps.relative() && clusterNS > math.MaxInt64-p.startNanos {
		return newAckErr(4007, "cluster timecode %d after the producer start timestamp is past 2262", timecode)
	}
	if ps.havePrev && clusterNS < ps.prevClusterNS {
		return newAckErr(4004, "cluster timecode %d is before the previous fragment's", timecode)
	}
	if p.ctx.Err() != nil {
		// The session failed meanwhile (an append, on the persister's side): no new fragment,
		// no BUFFERING after the failure.
		return newAckErr(5000, "the upload ended: %v", context.Cause(p.ctx))
	}
	if !p.setFragOpen(true) {
		return newAckErr(5000, "server shutting down")
	}
	n, err := p.buf.seq.reserve(p, func() (uint64, error) { return p.m.s.store.NextNumber(p.ctx, p.name) })
	if err != nil {
		if errors.Is(err, store.ErrStreamNotFound) {
			return newAckErr(4008, "stream %s is gone", p.name)
		}
		if p.ctx.Err() == nil {
			p.log.Error("put media: next number", "err", err)
		}
		return newAckErr(5000, "next number: %v", err)
	}
	ps.open, ps.number = true, n
	ps.timecode, ps.clusterNS = timecode, clusterNS
	ps.serverTime = p.m.s.cfg.Now()
	ps.frames = ps.frames[:0]
	ps.size, ps.sawVideo, ps.last = 0, false, ps.last[:0]
	ps.fragTags, ps.fragTagSize = ps.producerTags, ps.producerTagBytes
	ps.producerTags, ps.producerItems, ps.producerTagBytes = nil, 0, 0
	// The frames go into the arena as the Cluster's children as they arrive, after room for
	// the chunk's start (chunk), so that the arena becomes the stored chunk without a copy.
	ps.headroom = int(ps.fragTagSize) + chunkStartRoom
	for i := range ps.tracks {
		ps.headroom += len(ps.tracks[i].CodecPrivate) + 64
	}
	ps.arena = bufpool.Get(ps.headroom + max(ps.prevBody+ps.prevBody/64, minArena))[:ps.headroom]
	ps.rd.ReadAhead(ps.arena)
	ps.crc = 0
	tc := timecode
	p.ack(ackBuffering, &tc, n, nil)
	return nil
}

// nanos converts ticks to nanoseconds at the current scale, reporting overflow.
func (ps *putParser) nanos(ticks int64) (int64, bool) {
	scale := int64(ps.scale)
	if ticks > math.MaxInt64/scale || ticks < math.MinInt64/scale {
		return 0, false
	}
	return ticks * scale, true
}

// minArena is the least capacity of a fragment's arena (frames), which is otherwise the size of
// the previous fragment and 1/64 (a 250 kB fragment stays in bufpool's 256 KiB class): a
// second of 2 Mbit/s video.
const minArena = 256 << 10

// chunkStartRoom, with 64 bytes and the CodecPrivate of each track and the producer's tags, is the
// room the arena keeps ahead of the frames for the chunk's start (EBML header, Segment, Info,
// Tracks, Tags, the Cluster's header): about 300 bytes and the tracks' for a KVS producer.
const chunkStartRoom = 512 + mkv.ClusterHeaderSize

// findTrack returns the first of tracks that match accepts (a pointer into tracks), or nil.
func findTrack(tracks []mkv.Track, match func(*mkv.Track) bool) *mkv.Track {
	for i := range tracks {
		if match(&tracks[i]) {
			return &tracks[i]
		}
	}
	return nil
}

func (ps *putParser) frame(f *mkv.Frame) *ackErr {
	track := findTrack(ps.tracks, func(t *mkv.Track) bool { return t.Number == f.Track })
	if track == nil {
		return ps.fragErr(4010, "block on track %d, which Tracks does not declare", f.Track)
	}
	ns, ok := ps.nanos(f.Timecode)
	if !ok {
		return ps.fragErr(4007, "frame timecode %d overflows", f.Timecode)
	}
	if track.Type == mkv.TrackTypeVideo && !ps.sawVideo {
		ps.sawVideo = true
		if !f.Keyframe {
			return ps.fragErr(4006, "fragment at timecode %d does not start with a keyframe", ps.timecode)
		}
	}
	if prev, ok := lastFor(ps.prevLast, f.Track); ok && ns < prev {
		return ps.fragErr(4004, "frame at %d ns on track %d is before the previous fragment's last frame", ns, f.Track)
	}
	if len(ps.frames) == 0 {
		ps.firstNS = ns
	} else if ns-ps.firstNS > int64(ps.p.m.maxFragmentDuration) {
		return ps.fragErr(4002, "fragment at timecode %d is longer than %v", ps.timecode, ps.p.m.maxFragmentDuration)
	}
	// A frame costs the fragment its element as stored and its record (frames), not only its
	// payload: empty or laced one-byte frames would otherwise grow both without bound.
	ps.size += int64(mkv.FrameElementSize(f)) + frameRecordSize
	if ps.size+ps.fragTagSize > ps.p.m.maxFragmentSize {
		return ps.fragErr(4001, "fragment at timecode %d is over %d bytes", ps.timecode, ps.p.m.maxFragmentSize)
	}
	if end := ps.inPlace; end > 0 && len(f.Data) > 0 && &f.Data[0] == &ps.arena[:end][end-len(f.Data)] {
		// Read into the arena as a SimpleBlock (blockMemory): the element is in place; only its
		// flags become what AppendClusterFrame writes (keyframe or not: no invisible or
		// discardable bit from the producer).
		ps.arena = ps.arena[:end]
		ps.arena[end-len(f.Data)-1] &= 0x80
		ps.crc = crc32.Update(ps.crc, record.Castagnoli, ps.arena[ps.inPlaceAt:])
	} else {
		// Written here, not by the Reader: what it read ahead into the arena moves out first.
		ps.rd.Detach()
		ps.grow(mkv.FrameElementSize(f))
		at := len(ps.arena)
		var err error
		ps.arena, err = mkv.AppendClusterFrame(ps.arena, ps.timecode, f)
		if err != nil {
			return ps.fragErr(4006, "fragment at timecode %d: %v", ps.timecode, err)
		}
		ps.crc = crc32.Update(ps.crc, record.Castagnoli, ps.arena[at:])
		ps.rd.ReadAhead(ps.arena)
	}
	ps.inPlace = 0
	fr := *f
	fr.Data = nil
	ps.frames = append(ps.frames, fr)
	found := false
	for i := range ps.last {
		if ps.last[i].track == f.Track {
			ps.last[i].ns = max(ps.last[i].ns, ns)
			found = true
		}
	}
	if !found {
		ps.last = append(ps.last, trackTime{f.Track, ns})
	}
	return nil
}

// frameRecordSize is what the open fragment keeps in memory for each frame besides its bytes.
const frameRecordSize = int64(unsafe.Sizeof(mkv.Frame{}))

// grow makes room for need more bytes in the arena. Sized from the previous fragment, the arena
// grows only when a fragment is larger, by a quarter: it becomes the chunk, which the live buffer
// holds for seconds. It reports whether the arena moved (the Reader is lent the new one by the
// caller, once it writes no more there itself).
func (ps *putParser) grow(need int) (moved bool) {
	if cap(ps.arena)-len(ps.arena) < need {
		ps.rd.Detach() // the Reader reads ahead into the arena: it moves
		nb := append(bufpool.Get(len(ps.arena)+max(need, len(ps.arena)/4)), ps.arena...)
		bufpool.Put(ps.arena)
		ps.arena = nb
		return true
	}
	return false
}

// blockMemory is the Reader's WithBlockMemory: a SimpleBlock of one frame (size bytes with its
// header) is read into the arena, after its length, where frame finds it and keeps it as it is
// instead of copying the frame there; with ReadAhead it is usually there already. Outside a
// fragment, or for a block that would take the fragment over its size limit (frame refuses it
// with 4001), the Reader reads into its own buffer.
func (ps *putParser) blockMemory(size int) []byte {
	if !ps.open || ps.arena == nil || ps.size+int64(size)+ps.fragTagSize > ps.p.m.maxFragmentSize {
		return nil
	}
	if ps.grow(size) {
		ps.rd.ReadAhead(ps.arena)
	}
	// The element goes after the arena's length, which frame extends over it only when the
	// frame it gets is this one (otherwise it appends over it).
	start := len(ps.arena)
	ps.inPlace, ps.inPlaceAt = start+size, start
	return ps.arena[start : start+size]
}

// finish completes the open fragment: RECEIVED, the stored chunk, and the hand-off.
func (ps *putParser) finish() *ackErr {
	p := ps.p
	ps.rd.Detach() // the arena becomes the chunk
	frag := mkv.Fragment{DocType: ps.docType, TimecodeScale: ps.scale, Tracks: ps.tracks, Timecode: ps.timecode, Frames: ps.frames}
	producer := ps.clusterNS
	if ps.relative() {
		producer += p.startNanos
	}
	// Both timestamps are stored at the millisecond precision every API reports them with (JSON
	// seconds with 3 decimals, the MKV tags): a range whose end is a timestamp the client was
	// shown, or a "now" the Go SDK rounded down to the millisecond right after the upload, then
	// holds the fragment. Stored in nanoseconds, a fragment received 0.4 ms before such an end
	// fell outside it (seen as get-clip --end now missing the newest fragments).
	meta := store.FragmentMeta{
		Number:       ps.number,
		ServerTime:   ps.serverTime.Truncate(time.Millisecond),
		ProducerTime: time.Unix(0, producer).UTC().Truncate(time.Millisecond),
		Duration:     ps.duration(&frag),
	}
	chunk, buf, err := ps.chunk(&frag, meta)
	if err != nil {
		return ps.fragErr(4006, "fragment at timecode %d: %v", ps.timecode, err)
	}
	ps.prevBody = len(ps.arena) - ps.headroom
	ps.arena = nil // it is the chunk now
	meta.Size = int64(len(chunk))
	// The chunk's checksum from its start's and the frames' (taken as each frame landed): the
	// store does not read the cold chunk again for it.
	meta.Checksum = record.CombineCRC(crc32.Checksum(ps.prefix, record.Castagnoli), ps.crc, int64(len(chunk)-len(ps.prefix)))
	tc := ps.timecode
	p.ack(ackReceived, &tc, ps.number, nil)
	p.ingest.fragments.Inc()
	received := time.Now()
	ps.open = false
	p.setFragOpen(false)
	ps.havePrev, ps.prevClusterNS = true, ps.clusterNS
	ps.prevLast = append(ps.prevLast[:0], ps.last...)
	select {
	case ps.jobs <- persistJob{timecode: ps.timecode, meta: meta, chunk: chunk, buf: buf, received: received}:
	case <-p.ctx.Done():
		// The session failed (or the client left) while the persister was behind: the fragment
		// is after the failure, and gets no ack (see skip).
		p.buf.seq.done(ps.number)
		bufpool.Put(buf)
	}
	return nil
}

// duration is the open fragment's duration (mkv.Fragment.Duration), with the frame of a track
// that has one frame in it, no BlockDuration and no DefaultDuration (a time-lapse camera's
// fragment of one frame, an all-intra camera's fragment per keyframe, a 1 fps stream) lasting
// the spacing from that track's last frame in the previous fragment of the connection, at most
// maxFragmentDuration. mkv.Fragment.Duration has nothing to go by for such a frame: the fragment
// lasted 0, and its HLS segment showed EXTINF:0.000 after an EXT-X-DISCONTINUITY, its DASH
// segment 1 ms with a hole to the next one.
func (ps *putParser) duration(frag *mkv.Fragment) time.Duration {
	count := make(map[uint64]int, len(ps.tracks))
	for i := range frag.Frames {
		count[frag.Frames[i].Track]++
	}
	var frames []mkv.Frame // frag.Frames with the lone frames' durations, when one is estimated
	for i := range frag.Frames {
		fr := &frag.Frames[i]
		if count[fr.Track] != 1 || fr.Duration > 0 {
			continue
		}
		if t := findTrack(ps.tracks, func(t *mkv.Track) bool { return t.Number == fr.Track }); t == nil || t.DefaultDuration > 0 {
			continue
		}
		prev, ok := lastFor(ps.prevLast, fr.Track)
		ns, _ := ps.nanos(fr.Timecode)
		if !ok || ns <= prev {
			continue
		}
		if frames == nil {
			frames = slices.Clone(frag.Frames)
		}
		frames[i].Duration = min(ns-prev, int64(ps.p.m.maxFragmentDuration)) / int64(ps.scale)
	}
	if frames != nil {
		f := *frag
		f.Frames = frames
		frag = &f
	}
	return time.Duration(videoSpan(frag) * int64(ps.scale))
}

// release gives the arena of a fragment left open back to the buffer pool once the body is
// parsed.
func (ps *putParser) release() {
	if ps.rd != nil {
		ps.rd.Detach()
	}
	bufpool.Put(ps.arena)
	ps.arena = nil
}

func (ps *putParser) relative() bool { return ps.p.relative }

// chunk builds the stored form of a fragment (kvs-api.md §6.1, §10): EBML header, unknown-size
// Segment, Info, Tracks, the producer's Tags for this fragment, the KVS Tags (fragment number,
// server and producer timestamps) and one known-size Cluster with the frames as received. The
// frames are in the arena already, after its headroom: the start goes right before them, so the
// chunk is the arena's tail, and buf the pooled memory that holds it (the whole arena; a new
// buffer in the rare case that the start outgrew the headroom). The chunk never changes while
// referenced: the live buffer and its readers share it (see liveFragment), and the last of them
// gives buf back to the pool.
func (ps *putParser) chunk(f *mkv.Fragment, meta store.FragmentMeta) (chunk, buf []byte, err error) {
	if f.Timecode < 0 {
		return nil, nil, fmt.Errorf("cluster timecode %d: %w", f.Timecode, mkv.ErrTimecodeRange)
	}
	b := mkv.AppendEBMLHeader(ps.prefix[:0], f.DocType)
	b = mkv.AppendSegmentStart(b)
	b = mkv.AppendInfo(b, f.TimecodeScale, "")
	b = mkv.AppendTracks(b, f.Tracks)
	if len(ps.fragTags) > 0 {
		b = mkv.AppendTags(b, ps.fragTags...)
	}
	b = mkv.AppendTags(b, kvsTags(meta)...)
	frames := ps.arena[ps.headroom:]
	b = mkv.AppendClusterHeader(b, f.Timecode, int64(len(frames)))
	ps.prefix = b
	if start := ps.headroom - len(b); start >= 0 {
		copy(ps.arena[start:], b)
		return ps.arena[start:], ps.arena, nil
	}
	out := append(append(bufpool.Get(len(b)+len(frames)), b...), frames...)
	bufpool.Put(ps.arena)
	return out, out, nil
}
