package server

import "net/http"

// postRoutes are the KVS operations, each a POST to its own path (kvs-api.md §1.1): the control
// plane, the media data path and the archived-media APIs. Plain JSON operations go through op
// (adapt.go), streaming ones through streamOp.
func (s *Server) postRoutes() map[string]http.HandlerFunc {
	m, p := s.media, s.playback
	return map[string]http.HandlerFunc{
		// kinesisvideo, the control plane (control.go, tags.go; kvs-api.md §3–4)
		"/createStream":        op(s, s.createStream),
		"/describeStream":      op(s, s.describeStream),
		"/listStreams":         op(s, s.listStreams),
		"/deleteStream":        op(s, s.deleteStream),
		"/updateStream":        op(s, s.updateStream),
		"/updateDataRetention": op(s, s.updateDataRetention),
		"/getDataEndpoint":     op(s, s.getDataEndpoint),
		"/tagStream":           op(s, s.tagStream),
		"/untagStream":         op(s, s.untagStream),
		"/listTagsForStream":   op(s, s.listTagsForStream),
		"/TagResource":         op(s, s.tagResource),
		"/UntagResource":       op(s, s.untagResource),
		"/ListTagsForResource": op(s, s.listTagsForResource),

		// kinesis-video-media (putmedia.go, getmedia.go; §5–6)
		"/putMedia": m.handlePutMedia,
		"/getMedia": streamOp(s, m.getMedia),

		// kinesis-video-archived-media (archive.go, hls.go, dash.go, clip.go, images.go; §7–9)
		"/listFragments":              op(s, m.listFragments),
		"/getMediaForFragmentList":    streamOp(s, m.getMediaForFragmentList),
		"/getHLSStreamingSessionURL":  op(s, p.getHLSStreamingSessionURL),
		"/getDASHStreamingSessionURL": op(s, p.getDASHStreamingSessionURL),
		"/getClip":                    streamOp(s, p.getClip),
		"/getImages":                  op(s, s.images.getImages),

		// kvs extensions: the cluster's nodes (cluster.go), a node's internal tail (tail.go)
		"/kvs/describeCluster": op(s, s.describeCluster),
		tailPath:               streamOp(s, m.tail),
	}
}

// getRoutesTable are the GET (and HEAD) endpoints: the HLS and DASH playback URLs that a session URL
// leads to (hls.js, Safari, ffmpeg and every other player fetch them with plain GETs), the
// operator's endpoints (ops.go), and the web console on every other path that is not a KVS
// operation.
func (s *Server) getRoutesTable() map[string]http.HandlerFunc {
	p := s.playback
	return map[string]http.HandlerFunc{
		hlsPathPrefix + "getHLSMasterPlaylist.m3u8": p.sessionOp(false, p.masterPlaylist),
		hlsPathPrefix + "getHLSMediaPlaylist.m3u8":  p.sessionOp(false, p.mediaPlaylist),
		hlsPathPrefix + "getMP4InitFragment.mp4":    p.sessionOp(false, p.initFragment),
		hlsPathPrefix + "getMP4MediaFragment.mp4":   p.sessionOp(false, p.mediaFragment),
		hlsPathPrefix + "getTSFragment.ts":          p.sessionOp(false, p.tsFragment),
		dashPathPrefix + "getDASHManifest.mpd":      p.sessionOp(true, p.dashManifest),
		dashPathPrefix + "getMP4InitFragment.mp4":   p.sessionOp(true, p.initFragment),
		dashPathPrefix + "getMP4MediaFragment.mp4":  p.sessionOp(true, p.mediaFragment),

		// kvs extensions for operators (ops.go, events.go): /metrics and /events need a
		// signature when authentication is on, the health checks never do.
		"/healthz": s.healthz,
		"/readyz":  s.readyz,
		"/metrics": s.signed(s.MetricsHandler()),
		"/events":  s.signed(http.HandlerFunc(s.events.serve)),

		"/": consoleHandler(),
	}
}
