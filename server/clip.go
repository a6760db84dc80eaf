package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/openkvs/kvs/server/fmp4"
	"github.com/openkvs/kvs/server/store"
)

// maxClipWindow is GetClip's longest TimestampRange (kvs-api.md §9: end ≤ 24 h after start).
const maxClipWindow = 24 * time.Hour

type getClipRequest struct {
	streamRef
	ClipFragmentSelector *fragmentSelector `json:"ClipFragmentSelector"`
}

// clipWriter adapts the response to fmp4.Writer: each fragment is one Write, flushed at once and
// bounded by the media write timeout so that a client that stops reading is dropped.
type clipWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (c *clipWriter) Write(b []byte) (int, error) {
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := c.w.Write(b)
	if err != nil {
		return n, err
	}
	return n, c.rc.Flush()
}

// handleGetClip implements GetClip (kvs-api.md §9): an MP4 of the fragments whose start timestamp
// (server or producer, per ClipFragmentSelector) is in the range, both ends inclusive.
//
// Choices:
//   - The MP4 is fragmented (init segment, then one moof + mdat per KVS fragment; see
//     server/fmp4): a valid MP4 that ffmpeg, browsers, VLC and QuickTime play, and the only form
//     that can be streamed while the fragments are read one at a time. KVS documents a plain MP4;
//     players do not tell the difference.
//   - Content-Type is video/mp4 (§13.9).
//   - No 100 MB or 200-fragment cap: the clip is streamed with one fragment in memory at a time,
//     so its size costs nothing here. The range may span at most 24 hours.
//   - Everything that can fail is checked before the 200: retention 0 (NoDataRetentionException),
//     no fragment in the range (ResourceNotFoundException), codecs of the first fragment
//     (UnsupportedStreamMediaType / MissingCodecPrivateData / InvalidCodecPrivateData). After the
//     first byte the status cannot change: a fragment whose tracks differ from the first one's,
//     or that cannot be read or remuxed, ends the clip there (logged); the client sees a shorter,
//     still valid MP4.
//   - Fragments are placed on the timeline by their producer timestamps whatever the selector
//     (server timestamps jitter with the network), starting at 0.
func (p *playback) handleGetClip(w http.ResponseWriter, r *http.Request) {
	s := p.s
	var req getClipRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sel := req.ClipFragmentSelector
	if sel == nil || sel.FragmentSelectorType == nil {
		s.writeError(w, r, invalidArgf("ClipFragmentSelector with FragmentSelectorType is required."))
		return
	}
	kind := store.ServerTime
	switch *sel.FragmentSelectorType {
	case "SERVER_TIMESTAMP":
	case "PRODUCER_TIMESTAMP":
		kind = store.ProducerTime
	default:
		s.writeError(w, r, invalidArgf("ClipFragmentSelector.FragmentSelectorType must be SERVER_TIMESTAMP or PRODUCER_TIMESTAMP."))
		return
	}
	tr := sel.TimestampRange
	if tr == nil || tr.StartTimestamp == nil || tr.EndTimestamp == nil {
		s.writeError(w, r, invalidArgf("ClipFragmentSelector.TimestampRange with StartTimestamp and EndTimestamp is required."))
		return
	}
	start, end := tr.StartTimestamp.Time, tr.EndTimestamp.Time
	switch {
	case end.Before(start):
		s.writeError(w, r, invalidArgf("TimestampRange.EndTimestamp must not be before StartTimestamp."))
		return
	case end.Sub(start) > maxClipWindow:
		s.writeError(w, r, invalidArgf("TimestampRange may span at most 24 hours."))
		return
	}
	ctx := r.Context()
	st, err := s.lookupStream(ctx, req.streamRef, codeInvalidArgument)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := requireRetention(st); err != nil {
		s.writeError(w, r, err)
		return
	}
	m := s.media
	buf := m.buffer(st)
	// The first page is read before the 200 to check the range and the codecs.
	q := listQuery{Kind: "S", Start: clampNanos(start), End: clampNanos(end), Number: ^uint64(0)}
	if kind == store.ProducerTime {
		q.Kind = "P"
	}
	q.After = q.Start - 1
	const page = 100
	frags, err := m.listPage(ctx, st.Name, buf, q, page)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("get clip %s: %w", st.Name, err))
		return
	}
	if len(frags) == 0 {
		s.writeError(w, r, apiErrorf(codeResourceNotFound, "No fragments found in the requested timestamp range."))
		return
	}
	if _, _, err := p.describe(ctx, st.Name, frags[0].Number); err != nil {
		s.writeError(w, r, err)
		return
	}

	log := s.log.With("stream", st.Name, "request_id", requestID(r))
	w.Header().Set("Content-Type", "video/mp4")
	w.WriteHeader(http.StatusOK)
	mw := fmp4.NewWriter(&clipWriter{w: w, rc: http.NewResponseController(w), timeout: m.writeTimeout})
	written := 0
	for {
		n := min(len(frags), page)
		for _, meta := range frags[:n] {
			f, _, err := p.fragment(ctx, st.Name, meta.Number)
			if errors.Is(err, store.ErrFragmentNotFound) {
				continue // expired while the clip was being sent
			}
			if err == nil {
				err = mw.WriteFragment(f, meta.ProducerTime)
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
		if len(frags) <= page {
			return
		}
		last := frags[n-1]
		q.After, q.Number = q.time(last), last.Number
		if frags, err = m.listPage(ctx, st.Name, buf, q, page); err != nil {
			log.Error("get clip: clip ends early", "fragments", written, "err", err)
			return
		}
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
