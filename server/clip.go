package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/fmp4"
	"github.com/openkvs/kvs/server/store"
)

const (
	// MaxClipFragments and MaxClipBytes bound what one GetClip answers: the first 200 fragments
	// of the range, or fewer when they would pass 100 MB (stored bytes), as KVS documents
	// (GetClipOutput.Payload: "The output will contain the first 100 MB or the first 200
	// fragments from the specified start timestamp"). The first fragment is always in the clip.
	MaxClipFragments = 200
	MaxClipBytes     = 100 << 20
)

// maxClipWindow is GetClip's longest TimestampRange (kvs-api.md §9: end ≤ 24 h after start).
const maxClipWindow = 24 * time.Hour

type getClipRequest struct {
	streamRef
	ClipFragmentSelector *fragmentSelector `json:"ClipFragmentSelector"`
}

// getClip implements GetClip (kvs-api.md §9): an MP4 of the fragments whose start timestamp
// (server or producer, per ClipFragmentSelector) is in the range, both ends inclusive.
//
// Choices:
//   - The MP4 is fragmented (init segment, then one moof + mdat per KVS fragment; see
//     mkv/fmp4): a valid MP4 that ffmpeg, browsers, VLC and QuickTime play, and the only form
//     that can be streamed while the fragments are read one at a time. KVS documents a plain MP4;
//     players do not tell the difference.
//   - Content-Type is video/mp4 (§13.9).
//   - The clip holds the first 200 fragments of the range, or the first 100 MB of them, as in
//     KVS (MaxClipFragments, MaxClipBytes); a client asks again from the time after the last
//     for the rest. The range may span at most 24 hours. The clip is streamed with one
//     fragment in memory at a time.
//   - Everything that can fail is checked before the 200: retention 0 (NoDataRetentionException),
//     no fragment in the range (ResourceNotFoundException), codecs of the first fragment
//     (UnsupportedStreamMediaType / MissingCodecPrivateData / InvalidCodecPrivateData), and the
//     tracks of every other fragment of the clip (checkClipTracks): the API reference says that
//     codec private data and track changes within the queried media are not supported and
//     return an error. After the first byte the status cannot change: a fragment that changes
//     after the check (one arriving late in the range), or that cannot be read or remuxed, ends
//     the clip there (logged); the client sees a shorter, still valid MP4.
//   - Fragments are placed on the timeline by their producer timestamps whatever the selector
//     (server timestamps jitter with the network), starting at 0.
func (p *playback) getClip(ctx context.Context, req *getClipRequest) (responder, error) {
	s := p.s
	sel := req.ClipFragmentSelector
	if sel == nil || sel.FragmentSelectorType == nil {
		return nil, invalidArgf("ClipFragmentSelector with FragmentSelectorType is required.")
	}
	kind := store.ServerTime
	switch *sel.FragmentSelectorType {
	case "SERVER_TIMESTAMP":
	case "PRODUCER_TIMESTAMP":
		kind = store.ProducerTime
	default:
		return nil, invalidArgf("ClipFragmentSelector.FragmentSelectorType must be SERVER_TIMESTAMP or PRODUCER_TIMESTAMP.")
	}
	tr := sel.TimestampRange
	if tr == nil || tr.StartTimestamp == nil || tr.EndTimestamp == nil {
		return nil, invalidArgf("ClipFragmentSelector.TimestampRange with StartTimestamp and EndTimestamp is required.")
	}
	start, end := tr.StartTimestamp.Time, tr.EndTimestamp.Time
	switch {
	case end.Before(start):
		return nil, invalidArgf("TimestampRange.EndTimestamp must not be before StartTimestamp.")
	case end.Sub(start) > maxClipWindow:
		return nil, invalidArgf("TimestampRange may span at most 24 hours.")
	}
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		return nil, err
	}
	if err := requireRetention(st); err != nil {
		return nil, err
	}
	m := s.media
	buf := m.buffer(st)
	// The clip's fragments are listed before the 200, to check the range and the codecs.
	q := listQuery{Kind: "S", Start: clampNanos(start), End: clampNanos(end), Number: ^uint64(0)}
	if kind == store.ProducerTime {
		q.Kind = "P"
	}
	q.After = q.Start - 1
	frags, err := m.listPage(ctx, st.Name, buf, q, MaxClipFragments)
	if err != nil {
		return nil, fmt.Errorf("get clip %s: %w", st.Name, err)
	}
	frags = clipFragments(frags, m.maxClipBytes)
	if len(frags) == 0 {
		return nil, apiErrorf(codeResourceNotFound, "No fragments found in the requested timestamp range.")
	}
	first, _, err := p.describe(ctx, st.Name, frags[0].Number)
	if err != nil {
		return nil, err
	}
	if err := p.checkClipTracks(ctx, st.Name, frags, first); err != nil {
		return nil, err
	}

	var size int64
	for _, f := range frags {
		size += f.Size
	}
	return func(w http.ResponseWriter, r *http.Request) {
		m.sendWithin(w, r, size, func(r *http.Request) { p.writeClip(w, r, st.Name, frags) }) // it holds budget: not for ever
	}, nil
}

// clipFragments returns the leading fragments of frags that one clip holds: at most
// MaxClipFragments, and no more than maxBytes of them (stored sizes), the first always.
func clipFragments(frags []store.FragmentMeta, maxBytes int64) []store.FragmentMeta {
	frags = frags[:min(len(frags), MaxClipFragments)]
	var total int64
	for i, f := range frags {
		total += f.Size
		if i > 0 && total > maxBytes {
			return frags[:i]
		}
	}
	return frags
}

// checkClipTracks reads the tracks of every fragment of the clip after the first (frags; first
// are frags[0]'s), parsing only the chunk headers, and answers the error of the first fragment whose tracks could not follow first in
// one MP4: InvalidCodecPrivateDataException when only the codec configuration or picture size
// changes (a resolution change), UnsupportedStreamMediaTypeException when a track appears,
// disappears or changes codec, and the codec errors of its own tracks (describe's). The model
// names no error for a change; these are the two that say the media of the range is not one the
// clip can hold. It costs one header read per fragment (at most MaxClipFragments) before the
// first byte; a store that checks a payload when it is opened (FS: its CRC-32C) reads each
// fragment whole for it, and writeClip reads it again.
func (p *playback) checkClipTracks(ctx context.Context, name string, frags []store.FragmentMeta, first []mkv.Track) error {
	for _, meta := range frags[1:] {
		tracks, err := p.tracks(ctx, name, meta.Number)
		if errors.Is(err, store.ErrFragmentNotFound) {
			continue // expired: writeClip leaves it out
		}
		if err == nil {
			err = fmp4.CheckTracks(first, tracks)
		}
		switch {
		case err == nil:
		case errors.Is(err, fmp4.ErrCodecConfigChanged):
			return apiErrorf(codeInvalidCodecPrivate, "The codec private data changes within the requested range (fragment %s, at %s): "+
				"a clip holds one configuration per track; ask for the ranges before and after the change separately.",
				formatFragmentNumber(meta.Number), meta.ProducerTime.UTC().Format(time.RFC3339Nano))
		case errors.Is(err, fmp4.ErrTracksChanged):
			return apiErrorf(codeUnsupportedMedia, "The tracks change within the requested range (fragment %s, at %s): "+
				"a clip holds the tracks of its first fragment; ask for the ranges before and after the change separately.",
				formatFragmentNumber(meta.Number), meta.ProducerTime.UTC().Format(time.RFC3339Nano))
		default:
			return mediaError(err)
		}
	}
	return nil
}

// writeClip streams the clip of frags (listed, and their tracks checked, before the 200).
func (p *playback) writeClip(w http.ResponseWriter, r *http.Request, name string, frags []store.FragmentMeta) {
	s, m, ctx := p.s, p.s.media, r.Context()
	log := s.log.With("stream", name, "request_id", requestID(r))
	w.Header().Set("Content-Type", "video/mp4")
	w.WriteHeader(http.StatusOK)
	// Each fragment is one Write, flushed at once (pacedWriter).
	mw := fmp4.NewWriter(newPacedWriter(w, r, http.NewResponseController(w), m.writeTimeout))
	written := 0
	for _, meta := range frags {
		err := p.clipFragment(ctx, mw, name, meta)
		if errors.Is(err, store.ErrFragmentNotFound) {
			continue // expired while the clip was being sent
		}
		if errors.Is(err, fmp4.ErrTracksChanged) {
			log.Info("get clip: tracks change; clip ends early", "fragment", meta.Number, "fragments", written)
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Error("get clip: clip ends early", "fragment", meta.Number, "fragments", written, "err", err)
			}
			return
		}
		written++
	}
}

// requireRetention answers NoDataRetentionException for a stream that keeps nothing on disk: the
// archived-media playback APIs (HLS, GetClip) serve only stored fragments (kvs-api.md §9).
func requireRetention(st store.Stream) error {
	if st.RetentionHours <= 0 {
		return apiErrorf(codeNoDataRetention, "The stream %s does not retain data (DataRetentionInHours is 0).", st.Name)
	}
	return nil
}

// clipFragment writes fragment meta of the clip through mw. The fragments remuxed at once are
// bounded (remux.go): its frames and its segment, each about its size, are held until it is
// sent, and given back however the write ends.
func (p *playback) clipFragment(ctx context.Context, mw *fmp4.Writer, name string, meta store.FragmentMeta) error {
	release, err := p.s.media.remux.acquire(ctx, 2*meta.Size)
	if err != nil {
		return err // the client has gone
	}
	defer release()
	f, _, err := p.fragment(ctx, name, meta.Number)
	if err != nil {
		return err
	}
	defer f.Release()
	return mw.WriteFragment(f, meta.ProducerTime)
}
