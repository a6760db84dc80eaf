package capture

import (
	"context"
	"time"
)

// maxInterleave bounds how far cut reads ahead of the keyframe it cuts at, for frames of other
// tracks presented before it: up to a video frame decoded this long after the keyframe is
// presented. Files interleave tracks by decode time, so with B-frames the audio of the reorder
// delay (80 ms for two B-frames at 25 fps) comes after the keyframe; cameras send audio some
// tens of milliseconds apart from video.
const maxInterleave = time.Second

// cut ends the fragment of frames at the cut point key, which starts the next fragment, and
// returns the fragment's frames; the next fragment's go to f.carry, key first. after are the
// frames read after key already. Frames of other tracks go by their presentation time rather
// than by where they were in the source: those presented before key end this fragment, the
// others start the next one, so that consecutive fragments tile the timeline, each starting at
// its keyframe, as the KVS producer SDK's clusters do (its frame order coordinator submits the
// frames of all tracks in timestamp order, and a cluster starts at a keyframe's timestamp). Audio
// presented before a keyframe and read after it (a file interleaved by decode time, with
// B-frames) made the next fragment start up to the reorder delay before its keyframe and overlap
// the one before: fragments 1 s apart lasted 1.06 s. cut reads on until every other track of the
// fragment has a frame presented at or after key (at most maxInterleave); an error of the source
// meanwhile is kept for the next fragment, except cancellation, which it returns.
func (f *Fragmenter) cut(ctx context.Context, frames []Frame, key Frame, after []Frame) ([]Frame, error) {
	next := []Frame{key}
	kept := f.lastKept // frames are all read one way
	if f.video == 0 {
		f.carry, f.carryKept = append(next, after...), kept
		return frames, nil
	}
	waiting := map[uint64]bool{} // tracks with a frame before key and none after it yet
	cur := frames[:0]
	for _, fr := range frames {
		switch {
		case fr.Track == f.video:
			cur = append(cur, fr)
		case fr.PTS >= key.PTS:
			next = append(next, fr)
		default:
			cur = append(cur, fr)
			waiting[fr.Track] = true
		}
	}
	for _, fr := range next[1:] {
		delete(waiting, fr.Track)
	}
	stop := false
	take := func(fr Frame) {
		if fr.Track != f.video && fr.PTS < key.PTS {
			cur = append(cur, fr)
			return
		}
		next = append(next, fr)
		delete(waiting, fr.Track)
		if fr.Track == f.video && (f.isCutPoint(&fr) || fr.DTS-key.PTS > maxInterleave) {
			stop = true
		}
	}
	for _, fr := range after {
		take(fr)
	}
	for len(waiting) > 0 && !stop {
		fr, err := f.read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			f.deferred = err
			break
		}
		take(fr)
	}
	f.carry, f.carryKept = next, kept
	return cur, nil
}

// readNext is read, after the error that cut met reading ahead, if any.
func (f *Fragmenter) readNext(ctx context.Context) (Frame, error) {
	if err := f.deferred; err != nil {
		f.deferred = nil
		return Frame{}, err
	}
	return f.read(ctx)
}
