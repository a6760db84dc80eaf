package server

// GetImages on H.264 streams cut at recovery points (open GOP, intra refresh): a run whose
// keyframe is not an IDR picture decodes from the GOP before it, which the images never show.

import (
	"bytes"
	"context"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/server/store"
)

// recoveryOnly reports whether the keyframe au is an H.264 recovery point (an SEI message) and no
// IDR picture: open GOP, or the start of a cycle of periodic intra refresh, where the picture is
// whole only recovery_frame_cnt frames later when decoding starts there.
func recoveryOnly(c codec.Codec, codecPrivate, au []byte) bool {
	if c != codec.H264 {
		return false
	}
	ps, err := codec.ParseConfig(c, codecPrivate)
	if err != nil {
		return false
	}
	idr, rp := false, false
	_ = codec.WalkAVCC(au, ps.LengthSize, func(n []byte) error {
		idr = idr || codec.IsRandomAccessNALU(c, n)
		rp = rp || codec.IsRecoveryPoint(c, n)
		return nil
	})
	return rp && !idr
}

// lead returns the frames a decoder needs before the recovery point frames[g] so that the run's
// pictures are whole, as a decoder joining the stream earlier would have them: the GOP before it,
// from the keyframe before in the fragment, or else from the last keyframe of the fragment just
// before meta (prev, read here when nil and returned for the next run) when it follows without a
// gap with the same track configuration. An encoder's refresh cycle ends by its next recovery
// point, so one GOP is enough; it costs at most one more fragment held while planning, and nothing
// for streams of IDR pictures. Their times are moved to just before frames[g], so that they come
// first in the run's output order. No lead (nil): the run decodes from frames[g] as before.
func (im *imageService) lead(ctx context.Context, st store.Stream, meta store.FragmentMeta, track *mkv.Track,
	frames []vframe, g int, prev *mkv.Fragment) ([]vframe, *mkv.Fragment) {
	src := lastGOP(frames, g)
	if src == nil {
		if prev == nil {
			pm, ok := im.s.playback.adjacentBefore(ctx, st.Name, meta)
			if !ok {
				return nil, nil
			}
			f, _, err := im.s.playback.fragment(ctx, st.Name, pm.Number)
			if err != nil {
				return nil, nil
			}
			prev = f
		}
		pt := findTrack(prev.Tracks, func(t *mkv.Track) bool { return t.Type == mkv.TrackTypeVideo })
		if pt == nil || pt.CodecID != track.CodecID || !bytes.Equal(pt.CodecPrivate, track.CodecPrivate) {
			return nil, prev
		}
		pf := videoFrames(prev, pt.Number, time.Unix(0, 0))
		src = lastGOP(pf, len(pf))
	}
	if len(src) == 0 {
		return nil, prev
	}
	last := src[0].at
	for _, f := range src {
		last = max(last, f.at)
	}
	lead := make([]vframe, len(src))
	for k, f := range src {
		lead[k] = vframe{data: f.data, at: f.at - last + frames[g].at - 1, key: f.key}
	}
	return lead, prev
}

// lastGOP returns frames[k:end] from the last keyframe k before end, or nil when there is none.
func lastGOP(frames []vframe, end int) []vframe {
	for k := end - 1; k >= 0; k-- {
		if frames[k].key {
			return frames[k:end]
		}
	}
	return nil
}
