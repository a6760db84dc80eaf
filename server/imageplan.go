package server

// GetImages: which picture each sample gets, and the decoding.
//
// A sample at time t is served by the fragment that covers it (the last one starting at or
// before t, if t is at most its duration plus imageGapTolerance after its start), from the picture
// at or before t:
//
//   - When the fragment's keyframes are at most SamplingInterval apart (the usual case: thumbnails
//     every few seconds, 1–2 s GOPs), the picture is the keyframe at or before t, decoded alone:
//     the cheapest picture there is, and one per sample.
//   - When the interval is finer than the GOP, keyframes alone would give the same picture to
//     several samples in a row, useless for a vision model sampling at 5 per second. The picture
//     is then the frame at or before t, and one decoder run per GOP goes from its keyframe to the
//     last frame a sample of the page needs: each frame is decoded at most once per page, about
//     interval × frame rate decodes per image.
//
// Leading pictures (after a keyframe in decode order, before it in time: open GOPs) are never
// chosen, as they need the previous GOP. A page stops early (with a NextToken) before a sample that
// would take its decoder runs past imagesFrameBudget frames, so a page's work is bounded whatever
// the interval and GOP. The same picture asked twice in a page, or in a recent request of the same
// format and size, is decoded once: pictures are kept in a small cache (imageCache), which is what
// makes the console's thumbnails cheap to redraw.
//
// Decoding runs in the decode pool: at most Config.ImageDecodes jobs at once across all requests
// (ffmpeg processes at nice 10, or OpenH264 in process), so a huge request queues behind its own
// jobs instead of taking every core from ingest; and at most Config.MaxImageRequests requests are
// served at once, others get ClientLimitExceededException at once instead of queueing.

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/server/store"
)

const (
	// imageGapTolerance: a sample this little past the end of a fragment still gets its last
	// picture (producers' fragments need not touch; see hlsGapThreshold). Beyond it: NO_MEDIA.
	imageGapTolerance = hlsGapThreshold
	// imagesFrameBudget bounds the frames one page decodes (about 20 s of 30 fps video).
	imagesFrameBudget = 600
	// Jobs hold at most this many runs or frames, so that a page's work spreads over the pool.
	jobMaxRuns   = 25
	jobMaxFrames = 300
	// imageCacheBytes is the size of the picture cache.
	imageCacheBytes = 32 << 20
)

// ImageDecoder decodes the pictures GetImages returns; internal/decode has the implementations
// (decode.FFmpeg, the in-process OpenH264 decoder, decode.Chain of several). It must be safe for
// concurrent use. Decode returns one image per job.Want (nil: that picture does not decode), or an
// error when it cannot run the job at all.
type ImageDecoder interface {
	Decodes(c codec.Codec) bool
	Decode(ctx context.Context, job *decode.Job) ([][]byte, error)
	String() string
}

// imageService is the state of GetImages: the decoder, its pool and the picture cache.
type imageService struct {
	s        *Server
	dec      ImageDecoder  // nil: none
	decodes  chan struct{} // a token per job being decoded
	admitted chan struct{} // a token per request being served
	cache    *imageCache
}

// DefaultImageDecodes is the default Config.ImageDecodes: half the cores (at least one), so that
// decoding leaves the rest to ingest.
func DefaultImageDecodes() int { return max(1, runtime.GOMAXPROCS(0)/2) }

func newImageService(s *Server) *imageService {
	dec := s.cfg.ImageDecoder
	if dec == nil {
		if ff, err := decode.NewFFmpeg(""); err == nil {
			dec = ff
		}
	}
	n := s.cfg.ImageDecodes
	if n <= 0 {
		n = DefaultImageDecodes()
	}
	reqs := s.cfg.MaxImageRequests
	if reqs <= 0 {
		reqs = 4 * n
	}
	return &imageService{s: s, dec: dec, decodes: make(chan struct{}, n), admitted: make(chan struct{}, reqs),
		cache: newImageCache(imageCacheBytes)}
}

// imageSlot is one sample of a page: its time and, once planned and decoded, its image or error.
type imageSlot struct {
	t   time.Time
	err string // "", imageNoMedia or imageMediaError
	img []byte
}

// imageKey names a picture in one format and size, across requests.
type imageKey struct {
	arn                    string
	fragment               uint64
	frame                  int // index among the fragment's video frames, decode order
	format                 decode.Format
	quality, width, height int
}

// imagePlan is a page: its slots, the decoder jobs, and for each job's Want entry the slots that
// get that picture and its cache key.
type imagePlan struct {
	slots []*imageSlot
	jobs  []*decode.Job
	outs  [][]imageOut
	open  map[string]int // job config → index of the job still taking runs
}

type imageOut struct {
	key   imageKey
	slots []*imageSlot
}

// vframe is a video frame of a fragment, on the selector's clock.
type vframe struct {
	data []byte
	at   int64 // Unix ns
	key  bool
}

// plan chooses the picture of each sample of the page (at most q.page, fewer when the frame
// budget runs out) and builds the jobs that decode them.
func (im *imageService) plan(ctx context.Context, st store.Stream, q *imagesQuery) (*imagePlan, error) {
	p := &imagePlan{open: map[string]int{}}
	for k := q.next; k < q.count && k < q.next+q.page; k++ {
		p.slots = append(p.slots, &imageSlot{t: q.sample(k)})
	}
	first, last := p.slots[0].t, p.slots[len(p.slots)-1].t
	frags, err := im.fragments(ctx, st, q.kind, first.Add(-im.s.media.maxFragmentDuration-imageGapTolerance), last)
	if err != nil {
		return nil, fmt.Errorf("get images %s: %w", st.Name, err)
	}
	// cover[i]: the fragment serving slot i, or -1.
	cover := make([]int, len(p.slots))
	for i, sl := range p.slots {
		j := sort.Search(len(frags), func(j int) bool { return frags[j].Time(q.kind).After(sl.t) }) - 1
		if j < 0 || sl.t.After(frags[j].Time(q.kind).Add(im.coverDuration(frags, j, q.kind)+imageGapTolerance)) {
			j = -1
			sl.err = imageNoMedia
		}
		cover[i] = j
	}
	budget := imagesFrameBudget
	for i := 0; i < len(p.slots); {
		end := i + 1
		for end < len(p.slots) && cover[end] == cover[i] {
			end++
		}
		if cover[i] >= 0 {
			meta := frags[cover[i]]
			cut, err := im.planFragment(ctx, st, q, p, meta, meta.Time(q.kind), p.slots[i:end], &budget, i == 0)
			if err != nil {
				return nil, err
			}
			if cut >= 0 {
				p.slots = p.slots[:i+cut]
				break
			}
		}
		i = end
	}
	return p, nil
}

// planFragment plans the slots served by fragment meta (which starts at base on the selector's
// clock). It returns the index in slots before which the page must end (the frame budget is
// spent), or -1; first says whether slots[0] is the page's first slot, which is always planned.
func (im *imageService) planFragment(ctx context.Context, st store.Stream, q *imagesQuery, p *imagePlan,
	meta store.FragmentMeta, base time.Time, slots []*imageSlot, budget *int, first bool) (int, error) {
	mediaError := func() (int, error) {
		for _, sl := range slots {
			sl.err = imageMediaError
		}
		return -1, nil
	}
	f, _, err := im.s.playback.fragment(ctx, st.Name, meta.Number)
	switch {
	case errors.Is(err, store.ErrFragmentNotFound):
		for _, sl := range slots { // expired since it was listed
			sl.err = imageNoMedia
		}
		return -1, nil
	case errors.Is(err, store.ErrStreamNotFound):
		// Deleted since it was looked up: ResourceNotFound, not media that looks corrupt.
		return 0, err
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case err != nil:
		im.s.log.Error("get images: fragment unreadable", "stream", st.Name, "fragment", meta.Number, "err", err)
		return mediaError()
	}
	defer f.Release()
	track := findTrack(f.Tracks, func(t *mkv.Track) bool { return t.Type == mkv.TrackTypeVideo })
	if track == nil {
		return mediaError()
	}
	c, ok := codec.FromCodecID(track.CodecID)
	if !ok {
		return mediaError()
	}
	if im.dec == nil || !im.dec.Decodes(c) {
		return 0, im.unsupportedCodec(c)
	}
	w, h, err := outputSize(c, track.CodecPrivate, q)
	if err != nil {
		return mediaError()
	}
	frames := videoFrames(f, track.Number, base)
	exact := q.interval < gopDuration(frames, meta.Duration)

	// Per GOP (keyed by its keyframe's index): the last frame a slot needs, and the slots.
	type gop struct {
		last    int
		targets map[int][]*imageSlot
	}
	gops := map[int]*gop{}
	var order []int // GOPs in order of first use
	cut := -1
	for i, sl := range slots {
		target, g := pickFrame(frames, sl.t.UnixNano(), exact)
		if target < 0 {
			sl.err = imageMediaError
			continue
		}
		key := imageKey{st.ARN, meta.Number, target, q.format, q.quality, w, h}
		if img, ok := im.cache.get(key); ok {
			sl.img = img
			continue
		}
		gp := gops[g]
		cost := runLength(frames, g, target)
		if gp != nil {
			cost = max(0, runLength(frames, g, max(gp.last, target))-runLength(frames, g, gp.last))
		}
		if cost > *budget && !(first && i == 0) {
			cut = i
			break
		}
		*budget -= cost
		if gp == nil {
			gp = &gop{last: target, targets: map[int][]*imageSlot{}}
			gops[g] = gp
			order = append(order, g)
		}
		gp.last = max(gp.last, target)
		gp.targets[target] = append(gp.targets[target], sl)
	}
	var prev *mkv.Fragment // the fragment before, read once when a run needs its lead
	defer func() {
		if prev != nil {
			prev.Release()
		}
	}()
	for _, g := range order {
		gp := gops[g]
		run := runFrames(frames, g, gp.last)
		var lead []vframe
		if recoveryOnly(c, track.CodecPrivate, frames[g].data) {
			if lead, prev = im.lead(ctx, st, meta, track, frames, g, prev); len(lead) > 0 {
				*budget -= len(lead)
			}
		}
		outs := make([]imageOut, 0, len(gp.targets))
		var want []int
		for rank, idx := range runOrder(frames, run) {
			if sls, ok := gp.targets[idx]; ok {
				want = append(want, rank)
				outs = append(outs, imageOut{key: imageKey{st.ARN, meta.Number, idx, q.format, q.quality, w, h}, slots: sls})
			}
		}
		for k := range want {
			want[k] += len(lead)
		}
		p.addRun(c, track.CodecPrivate, w, h, q, frames, lead, run, want, outs)
	}
	return cut, nil
}

// addRun appends a run (frames[run...], copied) to the open job of its configuration, starting a
// new job when there is none or it is full.
func (p *imagePlan) addRun(c codec.Codec, cp []byte, w, h int, q *imagesQuery, frames, lead []vframe, run, want []int, outs []imageOut) {
	cfg := fmt.Sprintf("%d/%dx%d/%x", c, w, h, cp)
	j, ok := p.open[cfg]
	if ok {
		job := p.jobs[j]
		runs := 0
		for _, f := range job.Frames {
			if f.Start {
				runs++
			}
		}
		ok = runs < jobMaxRuns && len(job.Frames)+len(lead)+len(run) <= jobMaxFrames
	}
	if !ok {
		j = len(p.jobs)
		p.open[cfg] = j
		p.jobs = append(p.jobs, &decode.Job{Codec: c, CodecPrivate: bytes.Clone(cp), Width: w, Height: h, Format: q.format, Quality: q.quality})
		p.outs = append(p.outs, nil)
	}
	job := p.jobs[j]
	size := 0
	for _, f := range lead {
		size += len(f.data)
	}
	for _, i := range run {
		size += len(frames[i].data)
	}
	data := make([]byte, 0, size) // one copy per run: the fragment's memory goes back to its pool
	offset := len(job.Frames)
	for k, f := range lead {
		start := len(data)
		data = append(data, f.data...)
		job.Frames = append(job.Frames, decode.Frame{Data: data[start:len(data):len(data)], PTS: f.at, Start: k == 0, Lead: true})
	}
	for k, i := range run {
		start := len(data)
		data = append(data, frames[i].data...)
		job.Frames = append(job.Frames, decode.Frame{Data: data[start:len(data):len(data)], PTS: frames[i].at, Start: k == 0 && len(lead) == 0})
	}
	for _, w := range want {
		job.Want = append(job.Want, offset+w)
	}
	p.outs[j] = append(p.outs[j], outs...)
}

// decodeSlots runs the plan's jobs in the decode pool and fills in the slots. A job that fails
// (or a picture that does not decode) makes its slots MEDIA_ERROR; only the end of ctx is an
// error.
func (im *imageService) decodeSlots(ctx context.Context, st store.Stream, p *imagePlan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(im.decodes))
	for j, job := range p.jobs {
		g.Go(func() error {
			select {
			case im.decodes <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			imgs, err := im.dec.Decode(gctx, job)
			<-im.decodes
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				im.s.log.Warn("get images: decoding failed", "stream", st.Name, "decoder", im.dec.String(), "err", err)
				imgs = make([][]byte, len(job.Want))
			}
			for w, out := range p.outs[j] {
				img := imgs[w]
				if img != nil {
					im.cache.put(out.key, img)
				}
				for _, sl := range out.slots {
					if sl.img = img; img == nil {
						sl.err = imageMediaError
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// fragments returns the fragments starting in [from, to] on the kind clock, in time order.
// coverDuration is how long frags[j] covers samples: its stored duration, except for a fragment
// stored shorter than a millisecond (a connection's first of one frame, nothing before it to go
// by: playback.playDuration), which covers up to the next listed fragment's start, if that is
// within maxFragmentDuration, as its HLS and DASH segments play.
func (im *imageService) coverDuration(frags []store.FragmentMeta, j int, kind store.TimeKind) time.Duration {
	d := frags[j].Duration
	if d >= time.Millisecond || j+1 == len(frags) {
		return d
	}
	if gap := frags[j+1].Time(kind).Sub(frags[j].Time(kind)); gap > 0 && gap <= im.s.media.maxFragmentDuration {
		return gap
	}
	return d
}

func (im *imageService) fragments(ctx context.Context, st store.Stream, kind store.TimeKind, from, to time.Time) ([]store.FragmentMeta, error) {
	m := im.s.media
	buf := m.buffer(st)
	lq := listQuery{Kind: "S", Start: clampNanos(from), End: clampNanos(to), Number: ^uint64(0)}
	if kind == store.ProducerTime {
		lq.Kind = "P"
	}
	lq.After = lq.Start - 1
	const page = 1000
	var out []store.FragmentMeta
	for {
		frags, err := m.listPage(ctx, st.Name, buf, lq, page)
		if err != nil {
			return nil, err
		}
		n := min(len(frags), page)
		out = append(out, frags[:n]...)
		if len(frags) <= page {
			return out, nil
		}
		last := frags[n-1]
		lq.After, lq.Number = lq.time(last), last.Number
	}
}

// videoFrames returns the frames of track in f, in decode order, timed from base (the fragment's
// start on the selector's clock) plus their offset from the cluster timecode.
func videoFrames(f *mkv.Fragment, track uint64, base time.Time) []vframe {
	scale := int64(f.TimecodeScale)
	if scale == 0 {
		scale = mkv.DefaultTimecodeScale
	}
	var out []vframe
	for _, fr := range f.Frames {
		if fr.Track == track {
			out = append(out, vframe{data: fr.Data, at: base.UnixNano() + (fr.Timecode-f.Timecode)*scale, key: fr.Keyframe})
		}
	}
	return out
}

// gopDuration is the longest time between keyframes of the fragment, or its duration when it
// has one keyframe.
func gopDuration(frames []vframe, fragment time.Duration) time.Duration {
	var gop time.Duration
	prev := -1
	for i, f := range frames {
		if !f.key {
			continue
		}
		if prev >= 0 {
			gop = max(gop, time.Duration(f.at-frames[prev].at))
		}
		prev = i
	}
	if gop == 0 {
		return fragment
	}
	return gop
}

// pickFrame returns the frame for a sample at t (Unix ns) and the keyframe its run starts at: the
// latest frame at or before t (only keyframes unless exact), leading pictures left out; the first
// keyframe when t is before every candidate. (-1, -1): no keyframe at all.
func pickFrame(frames []vframe, t int64, exact bool) (target, gop int) {
	best, bestGOP, g, first := -1, -1, -1, -1
	for i, f := range frames {
		if f.key {
			g = i
			if first < 0 {
				first = i
			}
		}
		if g < 0 || f.at < frames[g].at || (!exact && !f.key) {
			continue
		}
		if f.at <= t && (best < 0 || f.at >= frames[best].at) {
			best, bestGOP = i, g
		}
	}
	if best < 0 {
		return first, first
	}
	return best, bestGOP
}

// runFrames returns the frames a decoder run from keyframe g needs to reach frame last: g and
// every frame after it up to last in decode order, leading pictures left out.
func runFrames(frames []vframe, g, last int) []int {
	run := []int{g}
	for i := g + 1; i <= last; i++ {
		if frames[i].at >= frames[g].at {
			run = append(run, i)
		}
	}
	return run
}

// runLength is len(runFrames(frames, g, last)).
func runLength(frames []vframe, g, last int) int {
	n := 1
	for i := g + 1; i <= last; i++ {
		if frames[i].at >= frames[g].at {
			n++
		}
	}
	return n
}

// runOrder returns the run's frame indexes in output order: by time, equal times in decode order
// (as decode.Job.OutputFrames orders them).
func runOrder(frames []vframe, run []int) []int {
	out := append([]int(nil), run...)
	sort.SliceStable(out, func(a, b int) bool { return frames[out[a]].at < frames[out[b]].at })
	return out
}

// outputSize is the size of the images: as asked, the height's with the picture's aspect ratio,
// or the picture's own (from the SPS), shrunk to fit 3840x2160.
func outputSize(c codec.Codec, codecPrivate []byte, q *imagesQuery) (int, int, error) {
	if q.width > 0 {
		return q.width, q.height, nil
	}
	ps, err := codec.ParseConfig(c, codecPrivate)
	if err != nil {
		return 0, 0, err
	}
	info, err := codec.ParseSPS(c, ps.SPS[0])
	if err != nil {
		return 0, 0, err
	}
	sw, sh := float64(info.Width), float64(info.Height)
	if q.height > 0 {
		return int(min(decode.MaxWidth, max(1, math.Round(float64(q.height)*sw/sh)))), q.height, nil
	}
	f := min(1, decode.MaxWidth/sw, decode.MaxHeight/sh)
	return int(max(1, math.Round(sw*f))), int(max(1, math.Round(sh*f))), nil
}

// imageCache keeps recent images by imageKey, least recently used out first, up to a total size.
// Images are immutable once in it.
type imageCache struct {
	mu        sync.Mutex
	max, size int
	lru       list.List // of *imageEntry, most recent first
	byKey     map[imageKey]*list.Element
}

type imageEntry struct {
	key imageKey
	img []byte
}

func newImageCache(max int) *imageCache {
	return &imageCache{max: max, byKey: map[imageKey]*list.Element{}}
}

func (c *imageCache) get(k imageKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*imageEntry).img, true
}

func (c *imageCache) put(k imageKey, img []byte) {
	if len(img) > c.max/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[k]; ok {
		return
	}
	c.byKey[k] = c.lru.PushFront(&imageEntry{k, img})
	c.size += len(img)
	for c.size > c.max {
		e := c.lru.Back()
		old := e.Value.(*imageEntry)
		c.lru.Remove(e)
		delete(c.byKey, old.key)
		c.size -= len(old.img)
	}
}
