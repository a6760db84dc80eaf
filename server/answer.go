package server

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The answer's writer, between net/http and the handlers: the status for the request log, the
// bytes for the egress metric, and the first write deadline of every answer.

// statusRecorder remembers the status for the request log. Unwrap lets http.NewResponseController
// reach the real writer (Flush, EnableFullDuplex, deadlines) for the streaming media handlers.
//
// With writeTimeout set (HTTP/1: answerWriteTimeout), the answer starts with a write deadline of
// that timeout (a pace on the connections of Listener), so that every answer, not only those
// whose handlers set deadlines of their own (the media, JSON results, acks), ends when the client
// stops reading: an error answer, a health check or a console file written to a client that
// pipelines requests and reads nothing blocked its connection's goroutine and buffers for good
// (kvs server sets no http.Server WriteTimeout, which would cut the streamed answers, and net/http
// clears the deadline after each answer). Handlers that stream set their own deadline before
// each write, as before.
type statusRecorder struct {
	http.ResponseWriter
	status       int
	wrote        bool
	out          prometheus.Counter // the bytes written, for the media reads (kvs_egress_bytes_total)
	writeTimeout time.Duration      // the answer's first write deadline (0: none)
	body         *requestBody       // the request's body, when it has one (newAnswerRecorder)
	readTimeout  time.Duration      // added to writeTimeout while body has not ended
}

// answerWriteTimeout is the statusRecorder.writeTimeout of r's answer: timeout on HTTP/1, none on
// HTTP/2, whose write deadline is a timer on the stream that resets it when it fires, written to or
// not (paced.go): it would cut a GetMedia response waiting at the live edge.
func answerWriteTimeout(r *http.Request, timeout time.Duration) time.Duration {
	if r.ProtoMajor != 1 {
		return 0
	}
	return timeout
}

// newAnswerRecorder returns the statusRecorder of r's answer, with its write deadline (HTTP/1:
// answerWriteTimeout). A body the handler has not read to its end when the answer starts is one
// net/http discards before it writes the answer's headers, a read that readTimeout bounds
// (newDeadlineBody): the first deadline then allows for it. So r.Body is watched for its end.
func newAnswerRecorder(w http.ResponseWriter, r *http.Request, out prometheus.Counter, writeTimeout, readTimeout time.Duration) *statusRecorder {
	rec := &statusRecorder{ResponseWriter: w, out: out, writeTimeout: answerWriteTimeout(r, writeTimeout)}
	if rec.writeTimeout > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		rec.body = &requestBody{ReadCloser: r.Body}
		rec.readTimeout = readTimeout
		r.Body = rec.body
	}
	return rec
}

// requestBody is a request body that tells whether it was read to its end.
type requestBody struct {
	io.ReadCloser
	ended atomic.Bool // PutMedia reads in a goroutine of its own
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.ended.Store(true)
	}
	return n, err
}

// started records that the answer starts with status code, and gives it its write deadline.
func (w *statusRecorder) started(code int) {
	w.status, w.wrote = code, true
	if w.writeTimeout > 0 {
		timeout := w.writeTimeout
		if w.body != nil && !w.body.ended.Load() {
			timeout += w.readTimeout
		}
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(timeout))
	}
}

func (w *statusRecorder) WriteHeader(code int) {
	if code >= 100 && code < 200 { // informational (100 Continue): the final status is still to come
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if !w.wrote {
		w.started(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(p []byte) (int, error) {
	if !w.wrote {
		w.started(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	if w.out != nil {
		w.out.Add(float64(n))
	}
	return n, err
}

// ReadFrom hands r to the real writer's ReadFrom, where net/http gives it to the connection's:
// bufConn sends a file section with sendfile(2) (GetMediaForFragmentList, archive.go).
func (w *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	if !w.wrote {
		w.started(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	if w.out != nil {
		w.out.Add(float64(n))
	}
	return n, err
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
