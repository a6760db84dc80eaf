package server

// Reading fragments for playback (HLS, DASH, GetClip): a fragment whole or only its header or
// its frames' times, from the live buffer or the store, and how long it plays.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
	"github.com/openkvs/kvs/server/store"
)

// fragment returns fragment n parsed: from the live buffer when it is still there, else from
// the store.
func (p *playback) fragment(ctx context.Context, name string, n uint64) (*mkv.Fragment, store.FragmentMeta, error) {
	buf := p.s.media.bufferNamed(name)
	var b []byte
	var meta store.FragmentMeta
	if f := buf.acquire(n); f != nil {
		defer f.release() // the FragmentReader copies the frames
		b, meta = f.Chunk, f.Meta
	} else {
		var err error
		if b, meta, err = readChunk(ctx, p.s.store, name, n, nil); err != nil {
			return nil, meta, err
		}
	}
	f, err := mkv.NewFragmentReader(bytes.NewReader(b)).Next()
	if err != nil {
		return nil, meta, fmt.Errorf("fragment %d: %w", n, err)
	}
	if meta.Duration, err = p.playDuration(ctx, name, meta); err != nil {
		f.Release()
		return nil, meta, err
	}
	loneFrameDurations(f, meta.Duration)
	return f, meta, nil
}

// playDuration is how long fragment meta of stream name plays in HLS playlists (EXTINF, markers),
// DASH manifests (d) and its fMP4 samples (fragment): its stored duration, except for a fragment
// stored shorter than a millisecond (0 in ListFragments), which lasts up to the start of the
// stream's next fragment on the producer timeline, if one starts within maxFragmentDuration.
//
// Why: the first fragment of a PutMedia connection from a camera sending one frame per fragment
// with no BlockDuration and no DefaultDuration (a time-lapse, 1 fps) has nothing before it that
// putParser.duration could go by, and is stored with 0. It was EXTINF:0.000 followed by an
// EXT-X-DISCONTINUITY (ON_DISCONTINUITY saw a 1 s gap), d="1" with a hole to the next segment,
// and a 1/30 s sample. The value is derived from the store alone, so every session and node
// gives the same one; a fragment with no successor yet (the live edge) keeps its stored duration
// until one comes. ListFragments still reports the stored duration.
func (p *playback) playDuration(ctx context.Context, name string, meta store.FragmentMeta) (time.Duration, error) {
	if meta.Duration >= time.Millisecond {
		return meta.Duration, nil
	}
	// Producer timestamps are whole milliseconds: the next one is at least one later.
	next, err := p.inRange(ctx, name, p.s.media.bufferNamed(name), store.ProducerTime,
		meta.ProducerTime.Add(time.Millisecond), meta.ProducerTime.Add(p.s.media.maxFragmentDuration), 1)
	if err != nil || len(next) == 0 {
		return meta.Duration, err
	}
	return next[0].ProducerTime.Sub(meta.ProducerTime), nil
}

// playDurations sets the Duration of each of frags (of stream name) to its playDuration.
func (p *playback) playDurations(ctx context.Context, name string, frags []store.FragmentMeta) error {
	for i := range frags {
		d, err := p.playDuration(ctx, name, frags[i])
		if err != nil {
			return err
		}
		frags[i].Duration = d
	}
	return nil
}

// loneFrameDurations gives the frame of a track that has one frame in f, no BlockDuration and no
// DefaultDuration the duration f was stored with (putParser.duration) from that frame on, so that
// its sample in an fMP4 segment or clip lasts what the fragment's EXTINF, DASH d and
// FragmentLengthInMilliseconds say (fmp4 gives it 1/30 s: a 1 fps stream's segments were a
// thirtieth of a second of video each, a hole to the next).
func loneFrameDurations(f *mkv.Fragment, d time.Duration) {
	if d <= 0 || len(f.Frames) == 0 {
		return
	}
	scale := int64(f.TimecodeScale)
	if scale <= 0 {
		scale = mkv.DefaultTimecodeScale
	}
	count := make(map[uint64]int, len(f.Tracks))
	first := f.Frames[0].Timecode
	for i := range f.Frames {
		count[f.Frames[i].Track]++
		first = min(first, f.Frames[i].Timecode)
	}
	end := first + int64(d)/scale
	for i := range f.Frames {
		fr := &f.Frames[i]
		if count[fr.Track] != 1 || fr.Duration > 0 || fr.Timecode >= end {
			continue
		}
		if t := findTrack(f.Tracks, func(t *mkv.Track) bool { return t.Number == fr.Track }); t != nil && t.DefaultDuration == 0 {
			fr.Duration = end - fr.Timecode
		}
	}
}

// fragmentMeta returns the metadata of fragment n: from the live buffer when it is still there,
// else from the store.
func (p *playback) fragmentMeta(ctx context.Context, name string, n uint64) (store.FragmentMeta, error) {
	if f := p.s.media.bufferNamed(name).get(n); f != nil {
		return f.Meta, nil
	}
	return p.s.store.Fragment(ctx, name, n)
}

// tracks returns the tracks of fragment n, reading only the chunk's header.
func (p *playback) tracks(ctx context.Context, name string, n uint64) ([]mkv.Track, error) {
	var rd io.Reader
	buf := p.s.media.bufferNamed(name)
	if f := buf.acquire(n); f != nil {
		defer f.release()
		rd = bytes.NewReader(f.Chunk)
	} else {
		rc, _, err := p.s.store.Open(ctx, name, n)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		rd = rc
	}
	r := mkv.NewReader(rd)
	for {
		ev, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("fragment %d: %w", n, err)
		}
		switch ev.Kind {
		case mkv.EventTracks:
			return ev.Tracks, nil
		case mkv.EventCluster:
			return nil, fmt.Errorf("fragment %d: %w", n, fmp4.ErrUnsupportedCodec)
		}
	}
}

// reorders reports whether f has frames out of presentation order on a track (B-frames).
func reorders(f *mkv.Fragment) bool {
	last := map[uint64]int64{}
	for _, fr := range f.Frames {
		if l, ok := last[fr.Track]; ok && fr.Timecode < l {
			return true
		}
		last[fr.Track] = fr.Timecode
	}
	return false
}

// fragmentBefore returns the fragment of the stream that ends where the one of meta starts (within
// hlsGapThreshold) on the producer timeline, the latest-starting before it, or nil. Which one it
// is depends on the stream alone, so a segment is the same for every session.
func (p *playback) fragmentBefore(ctx context.Context, name string, meta store.FragmentMeta) (*mkv.Fragment, store.FragmentMeta) {
	best, ok := p.adjacentBefore(ctx, name, meta)
	if !ok {
		return nil, store.FragmentMeta{}
	}
	f, m, err := p.fragmentTimes(ctx, name, best.Number)
	if err != nil {
		return nil, store.FragmentMeta{}
	}
	return f, m
}

// adjacentBefore returns the fragment that ends where meta starts on the producer clock (within
// hlsGapThreshold), the latest such, if any.
func (p *playback) adjacentBefore(ctx context.Context, name string, meta store.FragmentMeta) (store.FragmentMeta, bool) {
	lo := meta.ProducerTime.Add(-p.s.media.maxFragmentDuration - hlsGapThreshold)
	frags, err := p.inRange(ctx, name, p.s.media.bufferNamed(name), store.ProducerTime, lo, meta.ProducerTime, 0)
	if err != nil {
		return store.FragmentMeta{}, false
	}
	var best *store.FragmentMeta
	for i, g := range frags {
		if g.Number == meta.Number || !g.ProducerTime.Before(meta.ProducerTime) ||
			meta.ProducerTime.Sub(g.ProducerTime.Add(g.Duration)).Abs() > hlsGapThreshold {
			continue
		}
		if best == nil || g.ProducerTime.After(best.ProducerTime) {
			best = &frags[i]
		}
	}
	if best == nil {
		return store.FragmentMeta{}, false
	}
	return *best, true
}

// fragmentTimes returns fragment n as fragment does, with its frames' times, tracks and flags but
// not their data (nil), read a frame at a time: what a segment needs of the fragment before it
// (fmp4.AppendSegmentAfter). Read whole, each request for a segment with B-frames held the
// previous fragment twice over while its segment was made (the stored chunk and its frames).
func (p *playback) fragmentTimes(ctx context.Context, name string, n uint64) (*mkv.Fragment, store.FragmentMeta, error) {
	var rd io.Reader
	var meta store.FragmentMeta
	if f := p.s.media.bufferNamed(name).acquire(n); f != nil {
		defer f.release()
		rd, meta = bytes.NewReader(f.Chunk), f.Meta
	} else {
		rc, m, err := p.s.store.Open(ctx, name, n)
		if err != nil {
			return nil, meta, err
		}
		defer rc.Close()
		rd, meta = rc, m
	}
	r := mkv.NewReader(rd)
	var f *mkv.Fragment
read:
	for {
		ev, err := r.Next()
		switch {
		case err == io.EOF:
			break read
		case err != nil:
			return nil, meta, fmt.Errorf("fragment %d: %w", n, err)
		}
		switch ev.Kind {
		case mkv.EventCluster:
			if f != nil {
				break read // a stored chunk is one fragment: its first cluster (as fragment)
			}
			f = &mkv.Fragment{DocType: r.DocType(), TimecodeScale: r.TimecodeScale(), Tracks: r.Tracks(), Timecode: ev.Timecode}
		case mkv.EventFrame:
			if f != nil {
				fr := ev.Frame
				fr.Data = nil
				f.Frames = append(f.Frames, fr)
			}
		}
	}
	if f == nil {
		return nil, meta, fmt.Errorf("fragment %d: %w", n, io.ErrUnexpectedEOF)
	}
	var err error
	if meta.Duration, err = p.playDuration(ctx, name, meta); err != nil {
		return nil, meta, err
	}
	loneFrameDurations(f, meta.Duration)
	return f, meta, nil
}
