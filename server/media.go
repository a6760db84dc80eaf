package server

// The media data path (kvs-api.md §5–8, §10): PutMedia (putmedia.go, its parser putparser.go),
// GetMedia (getmedia.go), ListFragments and GetMediaForFragmentList (archive.go), on top of the
// live path (the chunk cache, livecache.go, and the notifier, notify.go) and the Store. How a
// fragment travels from the PutMedia body to the store and the live readers, and in what order,
// is described once, in doc.go ("The PutMedia data path"); the sequencer (sequencer.go) keeps
// concurrent uploads of one stream in number order.
//
// Choices where kvs-api.md leaves a question open ([?]), each documented at its handler:
//   - §5.1 x-amzn-fragment-acknowledgment-required: ignored, acks always sent. The timecode type
//     header is required; the start timestamp only with RELATIVE.
//   - §5.3/§13.6 an ERROR ack ends the upload: stop reading, finish PERSISTED for fragments
//     already RECEIVED, send ERROR, end the response. §13.5: IDLE is {"EventType":"IDLE"} after
//     IdleAckInterval (3 s) without another ack.
//   - §5.4 first video frame not a keyframe → 4006 (no dedicated code); deletion while putting →
//     4008 STREAM_NOT_ACTIVE (not 4507); 4011 is not enforced; the 4004 frame check is per track.
//   - §5.5/§13.3 max fragment duration: Config.MaxFragmentDuration, default 10 s.
//   - §13.4 two PutMedia connections on one stream: both accepted, fragments interleave whole.
//   - §5.2 END_OF_FRAGMENT is consumed, not stored; other producer Tags go with the next fragment.
//   - §10 retention 0: nothing stored, published at RECEIVED, no PERSISTED ack; GetMedia and
//     ListFragments serve the live buffer (5 min / 200 MB).
//   - §13.1 FRAGMENT_NUMBER start selector is inclusive; NOW starts after the last published
//     fragment; CONTINUATION_TOKEN is the fragment number of the last chunk, resumed after.
//   - §6.1/§13.6 GetMedia error chunk: EBML header + Segment + Tags{FRAGMENT_NUMBER, ERROR_ID,
//     ERROR_CODE}, then the response ends. A fragment purged mid-stream is skipped.
//   - GetMedia extensions: x-kvs-no-follow: 1 ends at the live edge; Config.GetMediaIdleTimeout
//     ends an idle follow (off by default; the AWS CLI, which cannot send the header, needs it).
//   - §7/§13.10 ListFragments: MaxResults default 100; no selector lists all in number order;
//     NextToken is base64 JSON of the query and cursor.
//   - §8/§13.2/§13.9 GetMediaForFragmentList: request order, duplicates twice, unknown number 404
//     before streaming, both tag spellings, Content-Type video/webm.

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openkvs/kvs/internal/every"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

// Defaults of the media Config fields.
const (
	DefaultMaxFragmentDuration = 10 * time.Second
	DefaultIdleAckInterval     = 3 * time.Second
	DefaultMediaWriteTimeout   = 30 * time.Second
	DefaultPutMediaReadTimeout = 30 * time.Second
	// contendedReadTimeout is how long an upload may send nothing inside its open fragment while
	// another upload of the same stream waits for that fragment's number (sequencer.go); it is
	// then ended as if PutMediaReadTimeout had passed.
	contendedReadTimeout = 5 * time.Second
	// MaxFragmentSize is the largest fragment PutMedia accepts: frame elements (with 64 bytes of
	// bookkeeping each) and producer-tag bytes of one cluster (KVS: 50 MB, kvs-api.md §5.5). A larger one ends the upload with ERROR 4001.
	MaxFragmentSize = 50 << 20
)

// media is the state of the media data path: the live cache and notifier, the PutMedia sessions (so that
// DeleteStream can fail them) and the settings taken from Config.
type media struct {
	s       *Server
	cache   *liveCache // recent fragments' bytes (livecache.go)
	notify  notifier   // wakes live readers (notify.go)
	feeders *feeders   // on a cluster: feeds the cache of streams other nodes write (feeder.go)

	maxFragmentDuration time.Duration
	idleAckInterval     time.Duration
	writeTimeout        time.Duration
	readTimeout         time.Duration
	contendedTimeout    time.Duration // sequencer.turn's stall: min(readTimeout, contendedReadTimeout)
	relayAnswerWait     time.Duration // relayAnswerWait (relay.go); tests shorten it
	getMediaIdle        time.Duration
	maxFragmentSize     int64
	maxClipBytes        int64 // MaxClipBytes; tests lower it
	minSendRate         int64 // minSendRate; tests raise it
	archivedLimits      bufferLimits
	liveOnlyLimits      bufferLimits

	mu        sync.Mutex
	sessions  map[string]map[*putSession]struct{}
	closing   chan struct{} // closed by Server.Close: live GetMedia responses end
	stopSweep func()        // ends the live buffers' sweep and waits for it
	uploads   atomic.Int64  // uploads being stored here (uploadStarted, uploadEnded)
	lingering atomic.Int64  // uploads in lingerClose (shutdown.go)
	remux     *byteBudget   // the stored fragments remuxed into MP4 at once (remux.go)

	// testDeliver, when set (tests), is called for each chunk GetMedia delivers, with whether it
	// came from the store (true) or from the live buffer.
	testDeliver func(number uint64, fromStore bool)
}

// newMedia returns the media data path of s, with the settings of s.cfg.
func newMedia(s *Server) *media {
	m := &media{
		s:                   s,
		cache:               newLiveCache(),
		notify:              newLocalNotifier(),
		maxFragmentDuration: orDefault(s.cfg.MaxFragmentDuration, DefaultMaxFragmentDuration),
		idleAckInterval:     orDefault(s.cfg.IdleAckInterval, DefaultIdleAckInterval),
		writeTimeout:        orDefault(s.cfg.MediaWriteTimeout, DefaultMediaWriteTimeout),
		readTimeout:         orDefault(s.cfg.PutMediaReadTimeout, DefaultPutMediaReadTimeout),
		getMediaIdle:        s.cfg.GetMediaIdleTimeout,
		contendedTimeout:    min(orDefault(s.cfg.PutMediaReadTimeout, DefaultPutMediaReadTimeout), contendedReadTimeout),
		relayAnswerWait:     relayAnswerWait,
		maxFragmentSize:     MaxFragmentSize,
		maxClipBytes:        MaxClipBytes,
		minSendRate:         minSendRate,
		archivedLimits:      archivedBufferLimits,
		liveOnlyLimits:      liveOnlyBufferLimits,
		sessions:            map[string]map[*putSession]struct{}{},
		closing:             make(chan struct{}),
		remux:               newByteBudget(remuxBytes),
	}
	if s.cfg.Cluster != nil {
		m.feeders = newFeeders(m, s.cfg.Cluster)
	}
	ctx, cancel := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		every.Tick(ctx, liveSweepInterval, func(context.Context) { m.cache.evictAll() })
	}()
	m.stopSweep = func() {
		cancel()
		<-swept
	}
	return m
}

// liveSweepInterval is how often every live buffer drops the fragments older than its window
// (bufferLimits.MaxAge). A buffer evicts as its stream publishes; without the sweep, a stream whose
// producer stopped kept its last fragments in memory for good (a retention-0 stream up to 200 MB,
// listed and served long after KVS's live buffer would have let them go).
const liveSweepInterval = time.Second

// follow makes sure, on a cluster, that the live cache of st is fed for a reader on this node,
// until the returned function is called (feeder.go). It does nothing on a single node.
func (m *media) follow(ctx context.Context, st store.Stream) func() {
	if m.feeders == nil {
		return func() {}
	}
	return m.feeders.join(ctx, st)
}

// close ends live GetMedia responses and drains PutMedia uploads (Server.Close, shutdown.go).
func (m *media) close() {
	close(m.closing)
	m.stopSweep()
	m.drainAll()
	if m.feeders != nil {
		m.feeders.close()
	}
}

// waitZero waits until counter is 0, or for at most d (Server.Close waits so for the uploads
// being stored and those in lingerClose). It polls: it runs once, at shutdown.
func waitZero(counter *atomic.Int64, d time.Duration) {
	for deadline := time.Now().Add(d); counter.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// limitsFor returns the live-buffer limits of a stream: a short window when the store keeps its
// data, KVS's live-buffer window when it keeps none.
func (m *media) limitsFor(st store.Stream) bufferLimits {
	if st.RetentionHours <= 0 {
		return m.liveOnlyLimits
	}
	return m.archivedLimits
}

// buffer returns the live buffer of st, creating it when absent. A buffer of another stream of the
// same name (deleted on another node, and created again) is closed and replaced, and its readers
// woken to find it gone. An existing buffer takes the limits of st's retention, which may have
// changed since it was made (UpdateDataRetention between two uploads): with the old ones a
// stream decreased to 0 hid its buffer from ListFragments, one increased from 0 kept 5 minutes.
func (m *media) buffer(st store.Stream) *streamBuffer {
	l := m.limitsFor(st)
	b, replaced := m.cache.stream(st.Name, st.ARN, l)
	if replaced {
		m.notify.notify(st.Name)
	}
	b.ensureLimits(l)
	return b
}

// bufferNamed returns the named stream's live buffer (creating it, for a stream that keeps
// data, when absent) without changing its limits: for readers that know only the name.
func (m *media) bufferNamed(name string) *streamBuffer {
	b, _ := m.cache.stream(name, "", m.archivedLimits)
	return b
}

// publish adds a complete fragment to its stream's buffer and wakes the stream's readers.
func (m *media) publish(name string, buf *streamBuffer, f *liveFragment) {
	if buf.publish(f) {
		m.notify.notify(name)
	}
}

// forget closes deleted stream st's buffer (if the name's buffer is st's) and wakes the name's
// live readers: those of st find their buffer gone and end with STREAM_DELETED; those of a
// stream created again under the name since go on.
func (m *media) forget(st store.Stream) {
	m.cache.dropARN(st.Name, st.ARN)
	m.notify.notify(st.Name)
}

// streamDeleted runs after DeleteStream: live consumers get their error chunk and every
// PutMedia session on the stream ends with ERROR 4008 (uploads to a stream created again under
// the name since are another stream's).
func (m *media) streamDeleted(st store.Stream) {
	m.forget(st)
	m.endSessions(st.Name, func(arn string) bool { return arn == st.ARN })
}

// endEarlierSessions ends with ERROR 4008 this node's uploads to an earlier stream of st's name:
// in a cluster, one deleted on another node (this one was not told) and created again. An
// upload to st calls it before it takes the stream's lease, which the earlier uploads, appending
// by name, would otherwise share, going on into st.
func (m *media) endEarlierSessions(st store.Stream) {
	m.endSessions(st.Name, func(arn string) bool { return arn != st.ARN })
}

// endSessions ends with ERROR 4008 the PutMedia sessions on stream name whose stream ARN match
// picks.
func (m *media) endSessions(name string, match func(arn string) bool) {
	m.mu.Lock()
	var sessions []*putSession
	for p := range m.sessions[name] {
		if match(p.arn) {
			sessions = append(sessions, p)
			delete(m.sessions[name], p)
		}
	}
	m.mu.Unlock()
	for _, p := range sessions {
		p.fail(newAckErr(4008, "stream %s deleted while streaming", name))
	}
}

func (m *media) addSession(p *putSession) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.sessions[p.name]
	if set == nil {
		set = map[*putSession]struct{}{}
		m.sessions[p.name] = set
	}
	set[p] = struct{}{}
	if m.isClosing() { // started after Close: take no fragment (lock order: m.mu, then p.mu)
		p.drain(0)
	}
}

func (m *media) removeSession(p *putSession) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if set := m.sessions[p.name]; set != nil {
		delete(set, p)
		if len(set) == 0 {
			delete(m.sessions, p.name)
		}
	}
}

// kvsTags returns the tags stored before each fragment's cluster (kvs-api.md §6.1), the names
// the KVS parser library reads.
func kvsTags(meta store.FragmentMeta) []mkv.SimpleTag {
	return []mkv.SimpleTag{
		{Name: mkv.TagFragmentNumber, Value: formatFragmentNumber(meta.Number)},
		{Name: mkv.TagServerTimestamp, Value: formatTimestampTag(meta.ServerTime.UnixNano())},
		{Name: mkv.TagProducerTimestamp, Value: formatTimestampTag(meta.ProducerTime.UnixNano())},
	}
}

// appendErrorChunk appends a GetMedia error chunk (kvs-api.md §6.1, choice for its [?]): an EBML
// header, an unknown-size Segment and one Tags element with FRAGMENT_NUMBER, ERROR_ID and
// ERROR_CODE, which is what the KVS parser library expects; no SERVER_TIMESTAMP. extra tags follow.
func appendErrorChunk(b []byte, number uint64, id int, code string, extra ...mkv.SimpleTag) []byte {
	b = mkv.AppendEBMLHeader(b, "matroska")
	b = mkv.AppendSegmentStart(b)
	tags := append([]mkv.SimpleTag{
		{Name: mkv.TagFragmentNumber, Value: formatFragmentNumber(number)},
		{Name: mkv.TagErrorID, Value: strconv.Itoa(id)},
		{Name: mkv.TagErrorCode, Value: code},
	}, extra...)
	return mkv.AppendTags(b, tags...)
}
