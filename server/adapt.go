package server

import (
	"context"
	"net/http"
	"time"
)

// Handler adapters: every KVS operation is decoded, checked and answered through one of these,
// so the preamble (decode the body, look the stream up, answer an error) is written once.

// op adapts a plain JSON operation: it decodes the request body into a Req (decodeJSON: body
// cap, {} for an empty body, InvalidArgumentException for anything malformed), calls fn with the
// request's context, and writes fn's answer as JSON, or its error through writeError. fn sees no
// http type: whatever it returns decides the whole answer. It is streamOp with a responder that
// writes the JSON.
func op[Req, Resp any](s *Server, fn func(ctx context.Context, req *Req) (Resp, error)) http.HandlerFunc {
	return streamOp(s, func(ctx context.Context, req *Req) (responder, error) {
		resp, err := fn(ctx, req)
		if err != nil {
			return nil, err
		}
		return func(w http.ResponseWriter, r *http.Request) { s.writeJSON(w, r, resp) }, nil
	})
}

// responder writes a streaming answer: its 200, headers and body. Once it runs, an error can
// only end the stream (an error chunk, an ERROR ack), never change the status.
type responder func(w http.ResponseWriter, r *http.Request)

// streamOp adapts a streaming operation in two phases. prepare decodes and checks everything that
// can still be answered with an error status (the request, the stream, the start point, every
// fragment asked for) and returns either that error or the responder that writes the answer.
// Nothing is written before prepare returns, so errors are decided before the first byte by
// construction.
func streamOp[Req any](s *Server, prepare func(ctx context.Context, req *Req) (responder, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := s.decodeJSON(w, r, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
		respond, err := prepare(r.Context(), &req)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		respond(w, r)
	}
}

// dashRefusalPause is how long a DASH GET with a refused session token (expired, unknown, of a
// deleted stream) waits before its answer.
const dashRefusalPause = time.Second

// sessionOp adapts an HLS (or, with dash, a DASH) playback GET: it verifies the SessionToken query
// parameter (playback.session: a missing one is InvalidArgumentException, an unknown one
// ResourceNotFoundException, an expired one 403 NotAuthorizedException; DASH answers a refused
// one after dashRefusalPause), then works as streamOp with the session in place of a decoded
// body. Errors are readable by players on any origin, as answers are (playbackBody): a browser hides from the page the status of an answer
// without Access-Control-Allow-Origin, and a player that sees no status (a network error, to
// it) cannot tell a 503 to retry from a 404.
func (p *playback) sessionOp(dash bool, prepare func(ctx context.Context, sess *hlsSession, r *http.Request) (responder, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := p.session(r, dash)
		if err == nil {
			var respond responder
			if respond, err = prepare(r.Context(), sess, r); err == nil {
				respond(w, r)
				return
			}
		} else if dash {
			// ffmpeg's DASH reader never gives up on a live manifest: past a session's end it asks
			// for the manifest and the next segment again at once after every refusal, whatever
			// the status (TestDASHExpiredSessionPaced counted 26,170 pairs in 8 s). A refused
			// session is final (and a failing store no better a moment later), so its answer waits
			// a moment: the same answer, a request a second.
			t := time.NewTimer(dashRefusalPause)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		w.Header().Set("Access-Control-Allow-Origin", "*")
		p.s.writeError(w, r, err)
	}
}
