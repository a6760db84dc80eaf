package capture

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/mkv"
)

// Fragment duration defaults and limits.
const (
	// DefaultTargetDuration is the fragment length a Fragmenter aims at.
	DefaultTargetDuration = 2 * time.Second
	// DefaultMaxDuration is the longest fragment a Fragmenter makes before cutting a GOP.
	DefaultMaxDuration = 30 * time.Second
	// MaxFragmentDuration is the upper bound for MaxDuration: a block's timecode is an int16 of
	// milliseconds relative to its cluster, and B-frame reordering needs some headroom.
	MaxFragmentDuration = 32 * time.Second
)

// FragmenterConfig configures a Fragmenter. The zero value cuts 2 s fragments from one pass over
// the source, as fast as it can be read.
type FragmenterConfig struct {
	// TargetDuration is the fragment length to aim at; 0 means DefaultTargetDuration. A fragment
	// ends before the first video keyframe at least TargetDuration after its start, less a quarter
	// of a frame (for sources without video: before the first frame at least TargetDuration after it).
	TargetDuration time.Duration
	// MaxDuration bounds a fragment; 0 means DefaultMaxDuration, and it may not exceed
	// MaxFragmentDuration. A fragment that would last longer ends at its last keyframe; one whose
	// single GOP is longer is cut inside it, which starts the next fragment with a non-keyframe
	// (that fragment ends at the next keyframe, whatever its length), and OnForcedCut is told.
	MaxDuration time.Duration
	// Realtime paces frames at their timestamps, as a live source would deliver them: a frame is
	// taken from the source no earlier than its DTS after the first frame's, so a fragment is
	// returned about when its last frame would have been captured.
	Realtime bool
	// Loop restarts the source at its end, through Reopen, with timestamps continuing after the
	// previous pass (last PTS plus one frame interval). It requires Reopen.
	Loop bool
	// Reopen opens the source again for Loop. The new source must have the same tracks.
	Reopen func(ctx context.Context) (Source, error)
	// Base is added to every timestamp before it becomes a timecode: pass the time since the Unix
	// epoch of the stream start for absolute timecodes (as KVS producers do), or 0 for timecodes
	// relative to the stream start.
	Base time.Duration
	// Rebase takes timestamps relative to the first frame's PTS (before Base is added): for
	// inputs whose timestamps do not start near 0, such as Matroska saved from GetMedia, whose
	// timecodes are absolute producer timestamps.
	Rebase bool
	// DocType is the EBML DocType of the fragments; "" means "matroska".
	DocType string
	// OnForcedCut, if set, is called with the cluster timecode of a fragment cut at MaxDuration
	// inside a GOP. Notice, if set, receives other oddities (frames dropped before the first
	// keyframe, a restart of a looped source). Both are called synchronously from Next.
	OnForcedCut func(clusterTimecode time.Duration)
	Notice      func(msg string)
	// ReuseFrameData lets the Fragmenter keep frame data in two buffers of its own that it
	// reuses, instead of a new allocation per frame: a fragment's frame data is then valid only
	// until Next has been called twice more. Sources that read through a buffer (Matroska/WebM,
	// MP4) then lend it instead of copying each frame into fresh memory, which was the largest
	// cost of put-media from a file (client CPU per 201 MB file: Matroska 0.67 → 0.54 s, MP4
	// 0.69 → 0.49 s). For callers that are done with a fragment when they ask for the next one,
	// as client.Producer.Send is (it does not retain the fragment).
	ReuseFrameData bool
}

// ErrNoKeyframe is returned by Fragmenter.Next when the whole input had frames but no video
// keyframe to start a fragment at, so that none could be sent.
var ErrNoKeyframe = errors.New("no video keyframe in the input")

// ErrNoFrames is returned by Fragmenter.Next when the input ended before its first frame: a file or
// pipe with a header and tracks but no media, such as a program writing it leaves when it fails.
var ErrNoFrames = errors.New("no frames in the input: it ended before its first (did the program that wrote it fail?)")

// lender is implemented by sources that can return a frame whose Data is valid only until their
// next read, saving the copy into fresh memory when the caller copies it anyway.
type lender interface {
	readLent(ctx context.Context) (Frame, error)
}

// Fragmenter cuts the frames of a Source into keyframe-aligned mkv.Fragments. A fragment starts
// at a keyframe of the first video track (its GOP is never split unless it exceeds MaxDuration),
// holds every track's frames in decode order, and has TimecodeScale 1 ms. Frame timecodes are
// the frames' PTS plus Base, rounded to the millisecond; the cluster timecode is the smallest of
// them (with B-frames of an open GOP that can be before the keyframe), and never less than the
// previous fragment's, so cluster timecodes never decrease.
//
// A Fragmenter is not safe for concurrent use. It owns the Source and closes it in Close.
type Fragmenter struct {
	cfg    FragmenterConfig
	src    Source
	tracks []mkv.Track
	video  uint64 // track number of the first video track, 0 when none

	pending       *Frame        // the frame that starts the next fragment
	carry         []Frame       // the frames that start the next fragment, from a keyframe on (instead of pending)
	carryKept     bool          // carry's data is in an arena
	started       bool          // the first video keyframe has been seen
	restart       bool          // the source said ErrDiscontinuity: take its tracks again
	done          bool          // the source is exhausted
	shift         time.Duration // added to source timestamps (Loop)
	passes        int           // passes over the source started (Loop)
	passFrames    int           // frames in the current pass
	passFirst     bool          // the next frame is the first of a pass
	maxPTS        time.Duration // largest shifted PTS seen
	interval      time.Duration // frame interval of the reference track, to continue after a loop
	fixedInterval bool
	lastRefDTS    time.Duration
	haveRefDTS    bool
	err           error // sticky error
	deferred      error // the source's error (io.EOF too) met reading ahead for a cut, for the fragment after it
	failed        error // the source's error after the fragment it cut short, for the next call
	lastTC        int64 // previous cluster timecode
	haveTC        bool

	paceStart time.Time     // wall clock of the first frame (Realtime)
	paceFirst time.Duration // DTS of the first frame
	paceMax   time.Duration // largest DTS paced so far

	// ReuseFrameData: frame data of even and odd fragments; cur is the one being filled. The
	// arenas come from internal/bufpool and are lent to the caller until Next has been called
	// twice more: an arena outgrown while filling arenas[i] waits in retired[i] until then.
	arenas      [2][]byte
	retired     [2][][]byte
	cur         int
	lastKept    bool // the frame read last is in arenas[cur]
	pendingKept bool // pending's data is in an arena
}

// NewFragmenter returns a Fragmenter over src.
func NewFragmenter(src Source, cfg FragmenterConfig) (*Fragmenter, error) {
	cfg.TargetDuration = cmp.Or(cfg.TargetDuration, DefaultTargetDuration)
	cfg.MaxDuration = cmp.Or(cfg.MaxDuration, DefaultMaxDuration)
	if cfg.TargetDuration < 0 || cfg.MaxDuration < 0 || cfg.MaxDuration > MaxFragmentDuration {
		return nil, fmt.Errorf("fragment duration: target %v, max %v: both must be positive and max at most %v",
			cfg.TargetDuration, cfg.MaxDuration, MaxFragmentDuration)
	}
	if cfg.TargetDuration > cfg.MaxDuration {
		return nil, fmt.Errorf("fragment duration %v is longer than the maximum %v", cfg.TargetDuration, cfg.MaxDuration)
	}
	if cfg.Loop && cfg.Reopen == nil {
		return nil, errors.New("fragmenter: Loop needs a Reopen function")
	}
	if cfg.DocType == "" {
		cfg.DocType = "matroska"
	}
	if len(src.Tracks()) == 0 {
		return nil, fmt.Errorf("fragmenter: %w: source has no tracks", ErrNoTracks)
	}
	f := &Fragmenter{cfg: cfg, src: src, tracks: append([]mkv.Track(nil), src.Tracks()...), passFirst: true}
	for _, t := range f.tracks {
		if t.Type == mkv.TrackTypeVideo {
			f.video = t.Number
			break
		}
	}
	if f.video == 0 {
		f.started = true
	}
	// The interval a looped pass continues after: the reference track's DefaultDuration, else the
	// smallest DTS step seen on it.
	for _, t := range f.tracks {
		if t.Number == f.refTrack() {
			f.interval = t.DefaultDuration
		}
	}
	f.fixedInterval = f.interval > 0
	return f, nil
}

// Close closes the current source.
func (f *Fragmenter) Close() error { return f.src.Close() }

func (f *Fragmenter) notice(format string, args ...any) {
	if f.cfg.Notice != nil {
		f.cfg.Notice(fmt.Sprintf(format, args...))
	}
}

// read returns the next frame with shifted timestamps, looping and pacing as configured.
func (f *Fragmenter) read(ctx context.Context) (Frame, error) {
	for {
		fr, err := f.readSource(ctx)
		if errors.Is(err, io.EOF) && f.cfg.Loop {
			if f.passFrames == 0 {
				return Frame{}, errors.New("fragmenter: looped source gave no frames")
			}
			if err := f.reopen(ctx); err != nil {
				return Frame{}, err
			}
			continue
		}
		if err != nil {
			return Frame{}, err
		}
		if f.passFirst {
			// Continue right after the previous pass: its largest PTS plus one frame interval.
			if f.passes > 0 {
				f.shift = f.maxPTS + f.interval - fr.PTS
			} else if f.cfg.Rebase {
				f.shift = -fr.PTS
			}
			f.passes++
			f.passFirst, f.passFrames = false, 0
		}
		f.passFrames++
		fr.PTS += f.shift
		fr.DTS += f.shift
		if fr.PTS > f.maxPTS || f.passes == 1 && f.passFrames == 1 {
			f.maxPTS = fr.PTS
		}
		if fr.Track == f.refTrack() && !f.fixedInterval {
			if step := fr.DTS - f.lastRefDTS; f.haveRefDTS && step > 0 && (f.interval == 0 || step < f.interval) {
				f.interval = step
			}
			f.lastRefDTS, f.haveRefDTS = fr.DTS, true
		}
		if f.cfg.Realtime {
			if err := f.pace(ctx, fr.DTS); err != nil {
				return Frame{}, err
			}
		}
		return fr, nil
	}
}

// readSource reads a frame, borrowing the source's buffer and keeping the data in the current
// arena when ReuseFrameData allows.
func (f *Fragmenter) readSource(ctx context.Context) (Frame, error) {
	f.lastKept = false
	l, ok := f.src.(lender)
	if !ok || !f.cfg.ReuseFrameData {
		return f.src.ReadFrame(ctx)
	}
	fr, err := l.readLent(ctx)
	if err == nil {
		fr.Data, f.lastKept = f.keep(fr.Data), true
	}
	return fr, err
}

// keep copies data to the end of the current arena. When the arena is full a larger one
// replaces it; the old one, which frames of this fragment still use, is retired with it.
func (f *Fragmenter) keep(data []byte) []byte {
	a := f.arenas[f.cur]
	if len(a)+len(data) > cap(a) {
		if cap(a) > 0 {
			f.retired[f.cur] = append(f.retired[f.cur], a)
		}
		a = bufpool.Get(max(2*cap(a), len(data), 1<<20))
	}
	n := len(a)
	a = append(a, data...)
	f.arenas[f.cur] = a
	return a[n:len(a):len(a)]
}

func (f *Fragmenter) reopen(ctx context.Context) error {
	if err := f.src.Close(); err != nil {
		return fmt.Errorf("fragmenter: closing source before looping: %w", err)
	}
	src, err := f.cfg.Reopen(ctx)
	if err != nil {
		return fmt.Errorf("fragmenter: reopening source to loop: %w", err)
	}
	f.src = src
	tracks := src.Tracks()
	if len(tracks) != len(f.tracks) {
		return fmt.Errorf("fragmenter: reopened source has %d tracks, had %d", len(tracks), len(f.tracks))
	}
	for i := range tracks {
		if tracks[i].Number != f.tracks[i].Number || tracks[i].CodecID != f.tracks[i].CodecID {
			return fmt.Errorf("fragmenter: reopened source's track %d is %s, was %s", tracks[i].Number, tracks[i].CodecID, f.tracks[i].CodecID)
		}
	}
	f.passFirst = true
	f.notice("fragmenter: source restarted (loop)")
	return nil
}

// pace waits until the frame with decode time dts is due.
func (f *Fragmenter) pace(ctx context.Context, dts time.Duration) error {
	if f.paceStart.IsZero() {
		f.paceStart, f.paceFirst, f.paceMax = time.Now(), dts, dts
		return nil
	}
	f.paceMax = max(f.paceMax, dts)
	wait := time.Until(f.paceStart.Add(f.paceMax - f.paceFirst))
	if wait <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(wait): // collected when not waited for (Go 1.23 timers)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next returns the next fragment, or io.EOF after the last one. The fragment and its frame data
// are owned by the caller (with ReuseFrameData, the frame data only until Next has been called
// twice more); its Tracks slice is shared by all fragments and must not be modified.
// On cancellation it returns ctx.Err() and the frames read for the unfinished fragment are lost.
// When the source fails (a truncated or damaged file), the frames read before are returned as a
// last, shorter fragment, and the next call returns the error. Errors other than io.EOF are sticky.
func (f *Fragmenter) Next(ctx context.Context) (*mkv.Fragment, error) {
	if f.err != nil {
		return nil, f.err
	}
	frag, err := f.next(ctx)
	if err != nil && !errors.Is(err, io.EOF) {
		f.err = err
	}
	return frag, err
}

func (f *Fragmenter) next(ctx context.Context) (*mkv.Fragment, error) {
	if f.failed != nil {
		return nil, f.failed
	}
	var frames []Frame
	if f.restart {
		f.takeTracks()
	}
	var start time.Duration
	// A fragment that starts inside a GOP (cut there at MaxDuration) ends at the first keyframe:
	// no decoder can start at it (kvs server refuses it), so the GOPs after it go out apart.
	inGOP := false
	switch {
	case len(f.carry) > 0: // the GOPs after the keyframe where the fragment before was cut
		f.switchArena()
		frames, f.carry = f.carry, nil
		start = frames[0].PTS
	case f.pending == nil:
		if f.done {
			return nil, io.EOF
		}
		f.switchArena()
		lead, fr, err := f.first(ctx)
		if err != nil {
			return nil, err
		}
		frames = append(lead, fr)
		start = fr.PTS
	default:
		f.switchArena()
		frames = append(frames, *f.pending)
		start = f.pending.PTS
		inGOP = !f.isCutPoint(f.pending)
		f.pending = nil
	}
	minPTS, maxPTS := start, start
	for _, fr := range frames {
		minPTS, maxPTS = min(minPTS, fr.PTS), max(maxPTS, fr.PTS)
	}
	lastKey := 0 // index in frames of the last cut point after the fragment's start; 0: none yet
	for i := 1; i < len(frames); i++ {
		if f.isCutPoint(&frames[i]) { // a keyframe that cut read ahead to
			lastKey = i
		}
	}
	forced := false
	for {
		fr, err := f.readNext(ctx)
		if errors.Is(err, io.EOF) {
			f.done = true
			break
		}
		if errors.Is(err, ErrDiscontinuity) {
			f.restart = true // the fragment ends here; the next starts at a keyframe
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			// The input failed (a file cut short, damaged data): the frames read so far are
			// good and go out; the next call returns the error.
			f.failed = err
			break
		}
		elapsed := fr.PTS - start
		if f.isCutPoint(&fr) && (elapsed >= f.cfg.TargetDuration-f.slack(frames, &fr) || inGOP) {
			if frames, err = f.cut(ctx, frames, fr, nil); err != nil {
				return nil, err
			}
			break
		}
		if max(maxPTS, fr.PTS)-min(minPTS, fr.PTS) > f.cfg.MaxDuration {
			if lastKey > 0 {
				// The GOPs since the fragment's start fit, the last one does not yet: end the
				// fragment at that GOP's keyframe, which starts the next one, rather than cut a
				// GOP.
				after := append(append(make([]Frame, 0, len(frames)-lastKey), frames[lastKey+1:]...), fr)
				if frames, err = f.cut(ctx, frames[:lastKey], frames[lastKey], after); err != nil {
					return nil, err
				}
				break
			}
			f.pending, f.pendingKept, forced = &fr, f.lastKept, true
			break
		}
		if f.isCutPoint(&fr) {
			lastKey = len(frames)
		}
		minPTS, maxPTS = min(minPTS, fr.PTS), max(maxPTS, fr.PTS)
		frames = append(frames, fr)
	}
	minPTS = frames[0].PTS
	for _, fr := range frames {
		minPTS = min(minPTS, fr.PTS)
	}
	frag := f.build(frames, minPTS)
	if forced && f.cfg.OnForcedCut != nil {
		f.cfg.OnForcedCut(time.Duration(frag.Timecode) * time.Millisecond)
	}
	return frag, nil
}

// switchArena starts filling the arena of the previous fragment but one (ReuseFrameData), whose
// data the caller may no longer use, and moves the pending frame's data into it, so that the
// previous fragment's data stays untouched until the next call.
func (f *Fragmenter) switchArena() {
	if !f.cfg.ReuseFrameData {
		return
	}
	f.cur ^= 1
	f.arenas[f.cur] = f.arenas[f.cur][:0]
	for i, a := range f.retired[f.cur] {
		bufpool.Put(a)
		f.retired[f.cur][i] = nil
	}
	f.retired[f.cur] = f.retired[f.cur][:0]
	if f.pending != nil && f.pendingKept {
		f.pending.Data = f.keep(f.pending.Data)
	}
	if f.carryKept {
		for i := range f.carry {
			f.carry[i].Data = f.keep(f.carry[i].Data)
		}
	}
}

// first returns the first video keyframe of the stream and the frames of other tracks that come
// before it in decode order (lead), when no video frame does: the AAC priming frame of an MP4
// without B-frames is decoded before the first picture, and dropping it changes the first
// decoded audio frame. Video before the first keyframe is dropped (no decoder could start there),
// and with it the frames of other tracks before that keyframe; lead frames more than MaxDuration
// before the keyframe are dropped too (a fragment spans at most MaxDuration).
func (f *Fragmenter) first(ctx context.Context) (lead []Frame, key Frame, err error) {
	dropped := 0
	drop := func(n int) {
		dropped += n
		lead = append(lead[:0], lead[n:]...)
	}
	sawVideo := false
	for {
		fr, err := f.read(ctx)
		if errors.Is(err, ErrDiscontinuity) {
			f.takeTracks()
			dropped += len(lead)
			lead, sawVideo = lead[:0], false
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				f.done = true
				if n := dropped + len(lead); n > 0 && !f.haveTC {
					// Nothing could be sent: say so rather than end as if the input were empty.
					return nil, Frame{}, fmt.Errorf("%w: %d frames read, none sent: a fragment must start at a keyframe of video track %d (for H.264/H.265 an IDR picture); re-encode the input with keyframes, e.g. ffmpeg -i IN -c:v libx264 -g 50 -c:a copy -f matroska out.mkv",
						ErrNoKeyframe, n, f.video)
				} else if n > 0 {
					f.notice("fragmenter: dropped the last %d frames: no video keyframe came after them", n)
				} else if !f.haveTC {
					return nil, Frame{}, ErrNoFrames
				}
			}
			return nil, Frame{}, err
		}
		if f.passes > 1 && !f.started {
			return nil, Frame{}, fmt.Errorf("fragmenter: a whole pass over the looped source had no keyframe on video track %d", f.video)
		}
		if f.started || fr.Track == f.video && fr.Keyframe {
			f.started = true
			n := 0
			for n < len(lead) && fr.PTS-lead[n].PTS > f.cfg.MaxDuration {
				n++
			}
			drop(n)
			if dropped > 0 {
				f.notice("fragmenter: dropped %d frames before the first video keyframe", dropped)
			}
			return lead, fr, nil
		}
		if fr.Track == f.video {
			sawVideo = true
		}
		if sawVideo {
			drop(len(lead))
			dropped++
			continue
		}
		lead = append(lead, fr)
		// Bounded while no video comes: keep no more than a fragment could hold.
		n := 0
		for n < len(lead) && fr.PTS-lead[n].PTS > f.cfg.MaxDuration {
			n++
		}
		drop(n)
	}
}

// takeTracks starts again after a discontinuity of the source: its tracks as they are now (a new
// slice: fragments already returned keep theirs), and a video keyframe to start at.
func (f *Fragmenter) takeTracks() {
	f.restart = false
	f.tracks = append([]mkv.Track(nil), f.src.Tracks()...)
	f.video = 0
	for _, t := range f.tracks {
		if t.Type == mkv.TrackTypeVideo {
			f.video = t.Number
			break
		}
	}
	f.started = f.video == 0
}

// refTrack is the track whose frame interval continues a loop: the first video track, else the
// first track.
func (f *Fragmenter) refTrack() uint64 {
	if f.video != 0 {
		return f.video
	}
	return f.tracks[0].Number
}

// slack is how far short of TargetDuration keyframe fr may be and still cut: a quarter of the
// frame period of its track, the track's DefaultDuration or, when longer (or none is set), the
// time since the last frame of the track in frames (none: 0): a frame due on the target, not
// the one before it (a target between two frames still ends at the first frame at or after it).
// A live camera's pictures are stamped with their capture times, which wander by milliseconds:
// its keyframes, forced once per fragment duration, fell a millisecond short of it as often as
// not, and each such one made the fragment a GOP longer (2 s for 1 s) or, forced a picture
// later, a frame longer (1033 ms at 30 fps). The live source forces its keyframes with a quarter
// of its DefaultDuration: the time since the picture before, shorter when that one was read
// late, did not reach a keyframe forced that early. A file's GOPs of exactly the target are cut
// as before.
func (f *Fragmenter) slack(frames []Frame, fr *Frame) time.Duration {
	if f.video == 0 {
		return 0
	}
	var period time.Duration
	for _, t := range f.tracks {
		if t.Number == fr.Track {
			period = t.DefaultDuration
		}
	}
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i].Track == fr.Track {
			period = max(period, fr.DTS-frames[i].DTS)
			break
		}
	}
	return max(period, 0) / 4
}

func (f *Fragmenter) isCutPoint(fr *Frame) bool {
	if f.video == 0 {
		return true
	}
	return fr.Track == f.video && fr.Keyframe
}

func (f *Fragmenter) timecode(t time.Duration) int64 {
	return int64((t + f.cfg.Base).Round(time.Millisecond) / time.Millisecond)
}

func (f *Fragmenter) build(frames []Frame, minPTS time.Duration) *mkv.Fragment {
	tc := f.timecode(minPTS)
	if f.haveTC && tc < f.lastTC {
		tc = f.lastTC
	}
	tc = max(tc, 0)
	f.lastTC, f.haveTC = tc, true
	out := &mkv.Fragment{
		DocType:       f.cfg.DocType,
		TimecodeScale: mkv.DefaultTimecodeScale,
		Tracks:        f.tracks,
		Timecode:      tc,
		Frames:        make([]mkv.Frame, len(frames)),
	}
	for i, fr := range frames {
		out.Frames[i] = mkv.Frame{Track: fr.Track, Timecode: f.timecode(fr.PTS), Keyframe: fr.Keyframe,
			DiscardPadding: fr.DiscardPadding, Data: fr.Data}
	}
	return out
}
