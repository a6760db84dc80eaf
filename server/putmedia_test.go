package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/server/store"
)

var storeKinds = []string{"mem", "fs"}

// storedFragments reads every fragment of a stream back from the store.
func storedFragments(t *testing.T, st store.Store, name string) ([]store.FragmentMeta, []*mkv.Fragment) {
	t.Helper()
	metas, err := st.Range(context.Background(), name, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var frags []*mkv.Fragment
	for _, m := range metas {
		b, _, err := readChunk(context.Background(), st, name, m.Number, nil)
		if err != nil {
			t.Fatal(err)
		}
		fs := readFragments(t, bytes.NewReader(b))
		if len(fs) != 1 {
			t.Fatalf("fragment %d: stored chunk holds %d fragments", m.Number, len(fs))
		}
		frags = append(frags, fs[0])
	}
	return metas, frags
}

func TestPutMediaAcks(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		for _, name := range []string{"h264.mkv", "h264_aac.mkv"} {
			t.Run(kind+"/"+name, func(t *testing.T) {
				e := newMediaEnv(t, kind)
				e.createStream(t, "cam", 24)
				c := loadClip(t, name)
				pc := e.startPut(t, "cam")
				if pc.status != 200 {
					t.Fatalf("status %d", pc.status)
				}
				pc.write(c.header())
				var numbers []uint64
				const n = 6
				for i := range n {
					// Full duplex: each fragment's PERSISTED arrives before the next one is sent.
					num := pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), true)
					if len(numbers) > 0 && num <= numbers[len(numbers)-1] {
						t.Fatalf("fragment numbers not increasing: %d after %v", num, numbers)
					}
					if s := formatFragmentNumber(num); len(s) != 47 {
						t.Fatalf("fragment number %q is not 47 digits", s)
					}
					numbers = append(numbers, num)
				}
				pc.end()

				metas, frags := storedFragments(t, e.store, "cam")
				if len(metas) != n {
					t.Fatalf("%d stored fragments, want %d", len(metas), n)
				}
				for i, f := range frags {
					src := c.frags[i%len(c.frags)]
					if len(f.Frames) != len(src) {
						t.Fatalf("fragment %d: %d frames, want %d", i, len(f.Frames), len(src))
					}
					for k := range src {
						if !bytes.Equal(f.Frames[k].Data, src[k].Data) || f.Frames[k].Keyframe != src[k].Keyframe {
							t.Fatalf("fragment %d frame %d differs", i, k)
						}
					}
					if got := tag(t, f, mkv.TagFragmentNumber); got != formatFragmentNumber(numbers[i]) {
						t.Errorf("fragment %d: FRAGMENT_NUMBER %s, want %s", i, got, formatFragmentNumber(numbers[i]))
					}
					wantProducer := formatTimestampTag(c.fragTimecode(i, baseMillis) * 1e6)
					if got := tag(t, f, mkv.TagProducerTimestamp); got != wantProducer {
						t.Errorf("fragment %d: PRODUCER_TIMESTAMP %s, want %s", i, got, wantProducer)
					}
					if got := tag(t, f, mkv.TagServerTimestamp); got != formatTimestampTag(metas[i].ServerTime.UnixNano()) {
						t.Errorf("fragment %d: SERVER_TIMESTAMP %s, meta %v", i, got, metas[i].ServerTime)
					}
					if metas[i].Duration < 900*time.Millisecond || metas[i].Duration > 1100*time.Millisecond {
						t.Errorf("fragment %d: duration %v, want about 1 s", i, metas[i].Duration)
					}
					if string(f.Tracks[0].CodecPrivate) != string(c.tracks[0].CodecPrivate) {
						t.Errorf("fragment %d: CodecPrivate not kept", i)
					}
				}
			})
		}
	}
}

// With unknown-size clusters (what PIC sends) a fragment is RECEIVED only when the next element
// starts; the last one at the end of the body. RELATIVE timecodes add the start header.
func TestPutMediaUnknownSizeRelative(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam", hdrTimecodeType, "RELATIVE", hdrProducerStartTime, "1700000000.5")
	pc.write(c.header())
	pc.write(unknownSize(c.cluster(t, 0, 0)))
	b0 := pc.expect(ackBuffering, 0)
	// End-of-fragment marker: ends nothing new (the Tags element already closed the cluster),
	// and is consumed, not stored.
	pc.write(mkv.AppendTags(nil, mkv.SimpleTag{Name: mkv.TagEndOfFragment}))
	pc.expect(ackReceived, 0)
	pc.expect(ackPersisted, 0)
	pc.write(unknownSize(c.cluster(t, 1, 0)))
	b1 := pc.expect(ackBuffering, 0)
	pc.pw.Close() // the end of the body ends the open cluster
	pc.expect(ackReceived, 0)
	pc.expect(ackPersisted, 0)
	if _, ok := pc.next(); ok {
		t.Fatal("ack after the last PERSISTED")
	}
	if b0.FragmentNumber >= b1.FragmentNumber || *b1.FragmentTimecode != 1000 {
		t.Fatalf("acks %+v %+v", b0, b1)
	}
	metas, frags := storedFragments(t, e.store, "cam")
	if len(metas) != 2 {
		t.Fatalf("%d fragments", len(metas))
	}
	if got := tag(t, frags[1], mkv.TagProducerTimestamp); got != "1700000001.500" {
		t.Errorf("RELATIVE producer timestamp %s, want 1700000001.500", got)
	}
	if _, ok := frags[0].Tag(mkv.TagEndOfFragment); ok {
		t.Error("END_OF_FRAGMENT was stored")
	}
}

// A RELATIVE cluster timecode that takes the producer start timestamp past the last time int64
// nanoseconds hold (2262-04-11T23:47:16Z) is INVALID_PRODUCER_TIMESTAMP (4007), as a cluster
// timecode that overflows by itself is; the sum wrapped around, and the fragment was stored with
// a producer timestamp in 1677.
func TestPutMediaRelativeTimestampOverflow(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam", hdrTimecodeType, "RELATIVE", hdrProducerStartTime, "9223372000") // 2262-04-11T23:46:40Z
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, 0), c.fragTimecode(0, 0), true) // 36 s before the end: fits
	const late = 100_000                                        // 100 s after the start: past the end
	pc.writeAsync(c.cluster(t, 0, late))
	ev, b := pc.expectErrorAfter(4007)
	checkErrorTarget(t, ev, b, false, c.fragTimecode(0, late))
	metas, _ := storedFragments(t, e.store, "cam")
	if len(metas) != 1 {
		t.Fatalf("%d fragments stored, want 1", len(metas))
	}
	if got, want := metas[0].ProducerTime, time.Unix(9223372000, 0).Add(time.Duration(c.fragTimecode(0, 0))*time.Millisecond); !got.Equal(want) {
		t.Errorf("producer timestamp %v, want %v", got, want)
	}
}

func TestPutMediaHeaderErrors(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	cases := []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"unknown stream", []string{hdrStreamName, "nope"}, 404, codeResourceNotFound},
		{"no stream", []string{hdrStreamName, ""}, 400, codeInvalidArgument},
		{"bad arn", []string{hdrStreamARN, "arn:x"}, 400, codeInvalidArgument},
		{"no timecode type", []string{hdrTimecodeType, ""}, 400, codeInvalidArgument},
		{"bad timecode type", []string{hdrTimecodeType, "absolute"}, 400, codeInvalidArgument},
		{"relative without start", []string{hdrTimecodeType, "RELATIVE", hdrProducerStartTime, ""}, 400, codeInvalidArgument},
		{"bad start", []string{hdrProducerStartTime, "17e8"}, 400, codeInvalidArgument},
		{"negative start", []string{hdrProducerStartTime, "-5"}, 400, codeInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pc := e.startPut(t, "cam", tc.hdr...)
			if pc.status != tc.status || pc.errTyp != tc.code {
				t.Fatalf("status %d %s, want %d %s", pc.status, pc.errTyp, tc.status, tc.code)
			}
		})
	}
}

func TestParseDecimalSeconds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1700000000", 1700000000e9, true},
		{"1700000000.5", 1700000000e9 + 5e8, true},
		{"1700000000.005", 1700000000e9 + 5e6, true},
		{"1700000000.1234567891234", 1700000000e9 + 123456789, true},
		{"0.", 0, true},
		{"", 0, false}, {".5", 0, false}, {"1e9", 0, false}, {"+1", 0, false}, {"1.2.3", 0, false},
		{"123456789012", 0, false},
		// 11 digits past 2262 do not fit in int64 nanoseconds (they wrapped to a negative time).
		{"99999999999", 0, false}, {"9223372036", 0, false}, {"9223372035.5", 9223372035e9 + 5e8, true},
	}
	for _, tc := range cases {
		got, ok := parseDecimalSeconds(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseDecimalSeconds(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// failingStore fails appends once armed: the write is accepted and its wait reports the failure,
// as an FS store's failed fdatasync does.
type failingStore struct {
	store.Store
	fail chan struct{}
}

func (s *failingStore) AppendAsync(ctx context.Context, stream string, meta store.FragmentMeta, data []byte) (func(context.Context) error, error) {
	select {
	case <-s.fail:
		return func(context.Context) error { return errors.New("disk on fire") }, nil
	default:
		return s.Store.AppendAsync(ctx, stream, meta, data)
	}
}

func TestPutMediaErrors(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	good := c.cluster(t, 0, baseMillis)
	goodTC := c.fragTimecode(0, baseMillis)
	next := c.cluster(t, 1, baseMillis)
	nonKey := func() []byte {
		src := c.frags[1][1:] // a fragment without its keyframe
		b, err := mkv.AppendCluster(nil, baseMillis+src[0].Timecode, shift(src, baseMillis))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	clusterOf := func(tc int64, frames ...mkv.Frame) []byte {
		b, err := mkv.AppendCluster(nil, tc, frames)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := c.frags[1][0]
	tooManyTracks := append(append([]mkv.Track{}, c.tracks...), mkv.Track{Number: 2, Type: 2, CodecID: "A_AAC"},
		mkv.Track{Number: 3, Type: 2, CodecID: "A_AAC"}, mkv.Track{Number: 4, Type: 2, CodecID: "A_AAC"})
	hdr4 := mkv.AppendTracks(mkv.AppendInfo(mkv.AppendSegmentStart(mkv.AppendEBMLHeader(nil, "")), 0, ""), tooManyTracks)

	// Every ERROR path of the parser, with what its ack must name: named, the fragment whose
	// BUFFERING came before it (an error inside a fragment); tc, the cluster timecode of what was
	// being parsed (0: no FragmentTimecode, for an error between fragments). An error at a
	// cluster start has the cluster's timecode but no number; none names the fragment before,
	// which was PERSISTED already (a producer refuses such an ack).
	nextTC := c.fragTimecode(1, baseMillis)
	cases := []struct {
		name  string
		cfg   func(*Config)
		first bool   // send the header and a good fragment first
		body  []byte // then this
		id    int
		named bool
		tc    int64
	}{
		{name: "cluster before header", body: good, id: 4006}, // refused before its timecode is read
		{name: "malformed", first: true, body: []byte{0x1F, 0x43, 0xB6, 0x75, 0x00}, id: 4006},
		{name: "malformed inside a fragment", first: true, body: clusterStart(nextTC, 0xA3, 0x00), id: 4006, named: true, tc: nextTC},
		{name: "first frame not a keyframe", first: true, body: nonKey(), id: 4006, named: true, tc: baseMillis + c.frags[1][1].Timecode},
		{name: "cluster timecode backwards", first: true, body: clusterOf(goodTC-1000, frameAt(key, goodTC-1000)), id: 4004, tc: goodTC - 1000},
		{name: "frame before previous fragment", first: true, body: clusterOf(goodTC+2000, frameAt(key, goodTC+2000), frameAt(c.frags[0][3], goodTC+10)), id: 4004, named: true, tc: goodTC + 2000},
		{name: "too long", cfg: func(c *Config) { c.MaxFragmentDuration = 500 * time.Millisecond }, body: append(c.header(), good...), id: 4002, named: true, tc: goodTC},
		{name: "undeclared track", first: true, body: clusterOf(goodTC+1000, frameAt(key, goodTC+1000), withTrack(frameAt(c.frags[0][1], goodTC+1040), 7)), id: 4010, named: true, tc: goodTC + 1000},
		{name: "four tracks", body: append(hdr4, good...), id: 4012, tc: goodTC},
		{name: "producer tags", first: true, body: mkv.AppendTags(nil, manyTags(11)...), id: 4009},
		{name: "18 producer tags before the next cluster", first: true, body: append(mkv.AppendTags(nil, manyTags(18)...), next...), id: 4009},
		{name: "cluster outside a segment", first: true, body: append(mkv.AppendEBMLHeader(nil, ""), good...), id: 4006},
		{name: "overflowing cluster timecode", first: true, body: clusterOf(math.MaxInt64/1000, frameAt(key, math.MaxInt64/1000)), id: 4007, tc: math.MaxInt64 / 1000},
	}
	for _, kind := range storeKinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				var mods []func(*Config)
				if tc.cfg != nil {
					mods = append(mods, tc.cfg)
				}
				e := newMediaEnv(t, kind, mods...)
				e.createStream(t, "cam", 1)
				pc := e.startPut(t, "cam")
				var n uint64
				if tc.first {
					pc.write(c.header())
					n = pc.fragment(good, goodTC, true)
				}
				pc.writeAsync(tc.body)
				ev, buffering := pc.expectErrorAfter(tc.id)
				checkErrorTarget(t, ev, buffering, tc.named, tc.tc)
				metas, _ := storedFragments(t, e.store, "cam")
				if tc.first && (len(metas) != 1 || metas[0].Number != n) {
					t.Fatalf("stored %+v, want only fragment %d", metas, n)
				}
				if !tc.first && len(metas) != 0 {
					t.Fatalf("stored %+v, want nothing", metas)
				}
			})
		}
	}

	t.Run("too large", func(t *testing.T) {
		e := newMediaEnv(t, "mem")
		e.srv.media.maxFragmentSize = 11_000 // the first fragment counts about 10 kB (8.4 kB of frames, 25 of them)
		e.createStream(t, "cam", 1)
		pc := e.startPut(t, "cam")
		pc.write(c.header())
		pc.fragment(good, goodTC, true)
		big := clusterOf(goodTC+1000, frameAt(key, goodTC+1000), mkv.Frame{Track: 1, Timecode: goodTC + 1040, Data: make([]byte, 9000)})
		pc.writeAsync(big)
		ev, b := pc.expectErrorAfter(4001)
		checkErrorTarget(t, ev, b, true, goodTC+1000)
		pc2 := e.startPut(t, "cam")
		pc2.write(c.header())
		pc2.writeAsync(clusterOf(goodTC+3000, mkv.Frame{Track: 1, Timecode: goodTC + 3000, Keyframe: true, Data: make([]byte, 20_000)}))
		ev, b = pc2.expectErrorAfter(4001) // one block over the cap is refused before it is read
		checkErrorTarget(t, ev, b, true, goodTC+3000)
	})

	t.Run("stream deleted", func(t *testing.T) {
		e := newMediaEnv(t, "fs")
		arn := e.createStream(t, "cam", 1)
		pc := e.startPut(t, "cam")
		pc.write(c.header())
		pc.fragment(good, goodTC, true)
		e.deleteStream(t, arn) // the upload is idle, blocked reading the body
		ev, b := pc.expectErrorAfter(4008)
		checkErrorTarget(t, ev, b, false, 0)
	})

	t.Run("store failure", func(t *testing.T) {
		fs := &failingStore{Store: store.NewMem(), fail: make(chan struct{})}
		e := newMediaEnvStore(t, fs)
		e.createStream(t, "cam", 1)
		pc := e.startPut(t, "cam")
		pc.write(c.header())
		n := pc.fragment(good, goodTC, true)
		close(fs.fail)
		pc.writeAsync(next)
		b := pc.expect(ackBuffering, 0)
		pc.expect(ackReceived, 0)
		ev := pc.expectError(5001)
		checkErrorTarget(t, ev, &b, true, nextTC)
		metas, _ := storedFragments(t, e.store, "cam")
		if len(metas) != 1 || metas[0].Number != n {
			t.Fatalf("stored %+v", metas)
		}
	})

	// The read timeout is 1 s, not shorter: it also runs while the fragment before the stall is on
	// its way, and a loaded machine's HTTP client has let more than 200 ms pass between two pieces
	// of one fragment (its RECEIVED was an ERROR 4000).
	t.Run("stalled body", func(t *testing.T) {
		e := newMediaEnv(t, "mem", func(c *Config) { c.PutMediaReadTimeout = time.Second })
		e.createStream(t, "cam", 1)
		pc := e.startPut(t, "cam")
		pc.write(c.header())
		pc.fragment(good, goodTC, true)
		ev, b := pc.expectErrorAfter(4000) // nothing more is sent: the read deadline ends the upload
		checkErrorTarget(t, ev, b, false, 0)
	})

	t.Run("stalled inside a fragment", func(t *testing.T) {
		e := newMediaEnv(t, "mem", func(c *Config) { c.PutMediaReadTimeout = time.Second })
		e.createStream(t, "cam", 1)
		pc := e.startPut(t, "cam")
		pc.write(c.header())
		pc.fragment(good, goodTC, true)
		pc.write(clusterStart(nextTC)) // a cluster started, then nothing
		ev, b := pc.expectErrorAfter(4000)
		checkErrorTarget(t, ev, b, true, nextTC)
	})
}

// clusterStart is the start of an unknown-size Cluster with timecode tc, followed by more.
func clusterStart(tc int64, more ...byte) []byte {
	b := mkv.AppendElementHeader(nil, mkv.IDCluster, -1)
	b = mkv.AppendUint(b, mkv.IDTimecode, uint64(tc))
	return append(b, more...)
}

// checkErrorTarget checks what an ERROR ack names: the fragment of the BUFFERING ack before it
// when named (else no FragmentNumber), and FragmentTimecode tc (0: none).
func checkErrorTarget(t *testing.T, ev ackEvent, buffering *ackEvent, named bool, tc int64) {
	t.Helper()
	switch {
	case named && buffering == nil:
		t.Fatalf("ERROR %+v: no BUFFERING ack came before it", ev)
	case named && ev.FragmentNumber != buffering.FragmentNumber:
		t.Errorf("ERROR names fragment %q, want the one that failed, %q", ev.FragmentNumber, buffering.FragmentNumber)
	case !named && ev.FragmentNumber != "":
		t.Errorf("ERROR names fragment %q, want none (the error belongs to no numbered fragment)", ev.FragmentNumber)
	}
	switch {
	case tc == 0 && ev.FragmentTimecode != nil:
		t.Errorf("ERROR has FragmentTimecode %d, want none", *ev.FragmentTimecode)
	case tc != 0 && (ev.FragmentTimecode == nil || *ev.FragmentTimecode != tc):
		t.Errorf("ERROR FragmentTimecode %v, want %d", ev.FragmentTimecode, tc)
	}
}

func shift(frames []mkv.Frame, by int64) []mkv.Frame {
	out := make([]mkv.Frame, len(frames))
	for i, f := range frames {
		f.Timecode += by
		out[i] = f
	}
	return out
}

func frameAt(f mkv.Frame, tc int64) mkv.Frame { f.Timecode = tc; return f }

func withTrack(f mkv.Frame, track uint64) mkv.Frame { f.Track = track; return f }

func manyTags(n int) []mkv.SimpleTag {
	tags := make([]mkv.SimpleTag, n)
	for i := range tags {
		tags[i] = mkv.SimpleTag{Name: fmt.Sprintf("user%d", i), Value: "v"}
	}
	return tags
}

// Retention-0 streams store nothing and get no PERSISTED; their fragments are still live.
func TestPutMediaNoRetention(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs")
	e.createStream(t, "live", 0)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "live")
	pc.write(c.header())
	for i := range 3 {
		pc.fragment(c.cluster(t, i, baseMillis), c.fragTimecode(i, baseMillis), false)
	}
	pc.end()
	if metas, _ := storedFragments(t, e.store, "live"); len(metas) != 0 {
		t.Fatalf("retention-0 stream stored %d fragments", len(metas))
	}
	resp := e.post(t, t.Context(), "/getMedia", map[string]any{"StreamName": "live",
		"StartSelector": map[string]any{"StartSelectorType": "EARLIEST"}}, hdrNoFollow, "1")
	defer resp.Body.Close()
	if frags := readFragments(t, resp.Body); len(frags) != 3 {
		t.Fatalf("GetMedia returned %d fragments from the live buffer, want 3", len(frags))
	}
}

// Two producers on one stream: both are accepted, fragments interleave whole, and they reach the
// store in number order even when the lower number completes last.
func TestPutMediaTwoProducers(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			e := newMediaEnv(t, kind)
			e.createStream(t, "cam", 1)
			c := loadClip(t, "h264.mkv")
			a, b := e.startPut(t, "cam"), e.startPut(t, "cam")
			a.write(c.header())
			b.write(c.header())
			ca := c.cluster(t, 0, baseMillis)
			a.write(ca[:len(ca)/2]) // A's fragment is open...
			ba := a.expect(ackBuffering, 0)
			nb := b.fragment(c.cluster(t, 0, baseMillis+50_000), c.fragTimecode(0, baseMillis+50_000), false)
			na, _ := parseFragmentNumber(ba.FragmentNumber)
			if na >= nb {
				t.Fatalf("A reserved %d before B's %d", na, nb)
			}
			a.write(ca[len(ca)/2:]) // ...and completes after B's
			a.expect(ackReceived, na)
			a.expect(ackPersisted, na)
			b.expect(ackPersisted, nb) // B's waited for A's lower number
			a.end()
			b.end()
			metas, frags := storedFragments(t, e.store, "cam")
			if len(metas) != 2 || metas[0].Number != na || metas[1].Number != nb {
				t.Fatalf("stored %+v, want %d then %d", metas, na, nb)
			}
			for _, f := range frags {
				if len(f.Frames) != len(c.frags[0]) {
					t.Fatalf("a stored fragment has %d frames, want %d", len(f.Frames), len(c.frags[0]))
				}
			}
		})
	}
}

// A producer whose old connection went silent inside a fragment (half-open after a network change)
// while it goes on over a new connection: the new connection's fragments wait for the old open
// fragment's number only until the old upload has sent nothing for contendedTimeout, not for the
// whole PutMediaReadTimeout; the old upload then ends with ERROR 4000 naming its open fragment.
func TestPutMediaStalledProducerYields(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "fs") // PutMediaReadTimeout: the default 30 s
	e.srv.media.contendedTimeout = 300 * time.Millisecond
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	old, cur := e.startPut(t, "cam"), e.startPut(t, "cam")
	old.write(c.header())
	ca := c.cluster(t, 0, baseMillis)
	old.write(ca[:len(ca)/2]) // the old connection's fragment is open, and then nothing comes
	na, _ := parseFragmentNumber(old.expect(ackBuffering, 0).FragmentNumber)
	cur.write(c.header())
	cur.write(c.cluster(t, 0, baseMillis+50_000))
	var nb uint64
	for _, want := range []string{ackBuffering, ackReceived, ackPersisted} {
		select {
		case ev, ok := <-cur.acks:
			if !ok || ev.EventType != want {
				t.Fatalf("new connection: ack %+v (ok %v), want %s", ev, ok, want)
			}
			nb, _ = parseFragmentNumber(ev.FragmentNumber)
		case <-time.After(10 * time.Second):
			t.Fatalf("new connection: no %s within 10 s: its fragment waits for the silent connection's open fragment", want)
		}
	}
	if nb <= na {
		t.Fatalf("new connection's fragment %d, want above the old one's %d", nb, na)
	}
	ev := old.expect(ackError, na)
	if ev.ErrorId != 4000 || ev.FragmentTimecode == nil || *ev.FragmentTimecode != c.fragTimecode(0, baseMillis) {
		t.Fatalf("old connection's ERROR %+v, want 4000 naming fragment %d", ev, na)
	}
	cur.end()
	metas, _ := storedFragments(t, e.store, "cam")
	if len(metas) != 1 || metas[0].Number != nb {
		t.Fatalf("stored %+v, want only the new connection's fragment %d", metas, nb)
	}
}

// IDLE acks flow while nothing else does.
func TestPutMediaIdle(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem", func(c *Config) { c.IdleAckInterval = 20 * time.Millisecond })
	e.createStream(t, "cam", 1)
	pc := e.startPut(t, "cam")
	for range 2 {
		select {
		case ev := <-pc.acks:
			t.Fatalf("unexpected ack %+v", ev)
		case <-pc.idles:
		}
	}
	pc.end()
}

// prepareRecorder is an FS store that reports the streams it was asked to Prepare.
type prepareRecorder struct {
	*store.FS
	calls chan string
}

func (r *prepareRecorder) Prepare(ctx context.Context, stream string) error {
	err := r.FS.Prepare(ctx, stream)
	r.calls <- stream
	return err
}

// An upload readies its stream's store (segment, fragment numbers) as soon as it starts, before
// its first fragment is complete; a stream that keeps no data is left alone.
func TestPutMediaPreparesStore(t *testing.T) {
	t.Parallel()
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &prepareRecorder{FS: fs, calls: make(chan string, 8)}
	e := newMediaEnvStore(t, rec)
	e.createStream(t, "live", 0)
	e.createStream(t, "kept", 1)
	c := loadClip(t, "h264.mkv")

	live := e.startPut(t, "live")
	live.write(c.header())
	live.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), false)
	live.end()

	pc := e.startPut(t, "kept")
	pc.write(c.header()) // no fragment yet
	select {
	case name := <-rec.calls:
		if name != "kept" {
			t.Fatalf("Prepare(%q), want only the stream with retention", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Prepare while the upload waits for its first fragment")
	}
	n := pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	pc.end()
	got, err := fs.Range(t.Context(), "kept", 0, 0)
	if err != nil || len(got) != 1 || got[0].Number != n {
		t.Fatalf("stored: %v, %v; want fragment %d", got, err, n)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPutMediaErrorLogged: the reason for an ERROR ack, which the ack itself does not carry, is
// logged once at warn with the stream, the code, the fragment and the byte offset in the body.
func TestPutMediaErrorLogged(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := newMediaEnv(t, "mem", func(cfg *Config) { cfg.Log = log })
	e.createStream(t, "cam", 1)
	pc := e.startPut(t, "cam")
	head := c.header()
	good := c.cluster(t, 0, baseMillis)
	pc.write(head)
	pc.fragment(good, c.fragTimecode(0, baseMillis), true)
	// A cluster with a frame on an undeclared track: the error names that fragment.
	key := c.frags[1][0]
	tc := c.fragTimecode(1, baseMillis)
	bad, err := mkv.AppendCluster(nil, tc, []mkv.Frame{frameAt(key, tc), withTrack(frameAt(c.frags[1][1], tc+40), 7)})
	if err != nil {
		t.Fatal(err)
	}
	pc.writeAsync(bad)
	ev, b := pc.expectErrorAfter(4010)

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "put media: ERROR ack" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d ERROR log lines, want 1:\n%s", len(lines), logs.String())
	}
	l := lines[0]
	// The failing block's offset: after the header, the first cluster, and the bad cluster's
	// header, timecode and first block.
	want := map[string]any{
		"level": "WARN", "stream": "cam", "error_id": float64(4010), "error_code": "TRACK_NUMBER_MISMATCH",
		"fragment_number": b.FragmentNumber, "fragment_timecode": float64(*ev.FragmentTimecode),
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log %s = %v, want %v", k, l[k], v)
		}
	}
	if r, _ := l["reason"].(string); !strings.Contains(r, "track 7") {
		t.Errorf("log reason %q, want the cause (track 7)", r)
	}
	off, _ := l["body_offset"].(float64)
	if start := float64(len(head) + len(good)); off <= start || off >= start+float64(len(bad)) {
		t.Errorf("log body_offset %v, want inside the bad cluster [%v, %v)", off, start, start+float64(len(bad)))
	}
}

// END_OF_FRAGMENT tags are consumed, not kept with the next fragment: however many arrive between
// two clusters, they count neither toward the next fragment's size nor toward the memory reserved
// for its producer tags (a body of them allocated that much for the next fragment's chunk, and
// past the size limit turned a valid fragment into ERROR 4001).
func TestPutMediaEndOfFragmentTagsNotCounted(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.srv.media.maxFragmentSize = 300_000
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	pc.write(unknownSize(c.cluster(t, 0, baseMillis)))
	pc.expect(ackBuffering, 0)
	eofr := make([]mkv.SimpleTag, 1000)
	for i := range eofr {
		eofr[i] = mkv.SimpleTag{Name: mkv.TagEndOfFragment}
	}
	for range 20 { // 20 Tags elements of END_OF_FRAGMENT markers, about 700 kB
		pc.write(mkv.AppendTags(nil, eofr...))
	}
	pc.expect(ackReceived, 0)
	pc.expect(ackPersisted, 0)
	pc.write(mkv.AppendTags(nil, mkv.SimpleTag{Name: "CAMERA", Value: "front"}))
	pc.write(unknownSize(c.cluster(t, 1, baseMillis)))
	pc.expect(ackBuffering, 0)
	pc.pw.Close()
	pc.expect(ackReceived, 0)
	pc.expect(ackPersisted, 0)
	if ev, ok := pc.next(); ok {
		t.Fatalf("ack %+v after the last PERSISTED", ev)
	}
	_, frags := storedFragments(t, e.store, "cam")
	if len(frags) != 2 || tag(t, frags[1], "CAMERA") != "front" {
		t.Fatalf("%d fragments stored, want 2 with the producer tag on the second", len(frags))
	}
}

// The size limit bounds what a fragment holds, not only its frames' payload: a cluster of empty
// (or tiny) frames is refused with ERROR 4001 once its blocks, as stored, and their bookkeeping
// pass the limit. Counting payload bytes only, such a cluster held the server's memory and the
// stored chunk past any bound (each empty frame is six bytes on the wire and a record in memory,
// a laced one a byte).
func TestPutMediaTinyFramesCountTowardSize(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, "mem")
	e.srv.media.maxFragmentSize = 300_000
	e.createStream(t, "cam", 1)
	c := loadClip(t, "h264.mkv")
	key := c.frags[0][0]
	tc := c.fragTimecode(0, baseMillis)
	frames := []mkv.Frame{frameAt(key, tc)}
	for range 60_000 {
		frames = append(frames, mkv.Frame{Track: 1, Timecode: tc + 10})
	}
	cl, err := mkv.AppendCluster(nil, tc, frames)
	if err != nil {
		t.Fatal(err)
	}
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	go func() {
		_, _ = pc.pw.Write(cl) // the server may stop reading
		pc.pw.Close()
	}()
	ev, b := pc.expectErrorAfter(4001)
	checkErrorTarget(t, ev, b, true, tc)
	if metas, _ := storedFragments(t, e.store, "cam"); len(metas) != 0 {
		t.Fatalf("stored %+v, want nothing", metas)
	}
}

// The C producer (PIC) writes an event (putKinesisVideoEventMetadata) as one Tag: the event's
// SimpleTag (AWS_KINESISVIDEO_NOTIFICATION, or AWS_KINESISVIDEO_IMAGE_GENERATION and its
// AWS_KINESISVIDEO_IMAGE_PREFIX) followed by up to 10 name/value pairs (MAX_EVENT_CUSTOM_PAIRS),
// and lets a fragment carry 25 metadata SimpleTags in all (MAX_FRAGMENT_METADATA_COUNT). Such a
// fragment is accepted: its event pairs do not count toward the 10 fragment metadata items. Counted
// as items, a notification with 10 pairs was ERROR 4009, which PIC does not retry: it dropped the
// fragment and ended the upload.
func TestPutMediaEventMetadataTags(t *testing.T) {
	t.Parallel()
	c := loadClip(t, "h264.mkv")
	pairs := func(prefix string) []mkv.SimpleTag {
		tags := manyTags(10)
		for i := range tags {
			tags[i].Name = prefix + tags[i].Name
		}
		return tags
	}
	notification := append([]mkv.SimpleTag{{Name: mkv.TagNotification}}, pairs("n-")...)
	image := append([]mkv.SimpleTag{{Name: mkv.TagImageGeneration}, {Name: mkv.TagImagePrefix, Value: "cam1"}}, pairs("i-")...)

	e := newMediaEnv(t, "mem")
	e.createStream(t, "cam", 1)
	pc := e.startPut(t, "cam")
	pc.write(c.header())
	pc.fragment(c.cluster(t, 0, baseMillis), c.fragTimecode(0, baseMillis), true)
	// As PIC packages them before the next cluster: each fragment metadata item in a Tags of its
	// own, each event in one Tags. 2 + 11 + 12 = 25 SimpleTags.
	body := mkv.AppendTags(nil, mkv.SimpleTag{Name: "site", Value: "north"})
	body = mkv.AppendTags(body, mkv.SimpleTag{Name: "door", Value: "front"})
	body = mkv.AppendTags(body, notification...)
	body = mkv.AppendTags(body, image...)
	pc.write(body)
	pc.fragment(c.cluster(t, 1, baseMillis), c.fragTimecode(1, baseMillis), false)
	pc.pw.Close()
	pc.expect(ackPersisted, 0)
	if ev, ok := pc.next(); ok {
		t.Fatalf("ack %+v after the last PERSISTED", ev)
	}
	_, frags := storedFragments(t, e.store, "cam")
	if len(frags) != 2 {
		t.Fatalf("%d fragments stored, want 2", len(frags))
	}
	for _, name := range []string{"site", "n-user9", mkv.TagImagePrefix, "i-user0"} {
		tag(t, frags[1], name)
	}

	// Beyond what PIC can send: 11 fragment metadata items, or more than 25 SimpleTags.
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"11 items", append(mkv.AppendTags(nil, manyTags(10)...), mkv.AppendTags(nil, mkv.SimpleTag{Name: "x", Value: "y"})...)},
		{"26 tags", append(append(mkv.AppendTags(nil, manyTags(4)...), mkv.AppendTags(nil, notification...)...), mkv.AppendTags(nil, image...)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := e.startPut(t, "cam")
			pc.write(c.header())
			pc.writeAsync(append(tc.body, c.cluster(t, 2, baseMillis)...))
			ev, b := pc.expectErrorAfter(4009)
			checkErrorTarget(t, ev, b, false, 0)
		})
	}
}
