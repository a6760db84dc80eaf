package testutil

import "net/http"

// CutWriter passes the first Left bytes of an answer, then drops the connection, as a server
// killed in the middle of an answer does (the handler ends with panic(http.ErrAbortHandler)).
type CutWriter struct {
	http.ResponseWriter
	Left int
}

func (w *CutWriter) Write(p []byte) (int, error) {
	if len(p) >= w.Left {
		_, _ = w.ResponseWriter.Write(p[:w.Left])
		_ = http.NewResponseController(w.ResponseWriter).Flush()
		w.Left = 0
		panic(http.ErrAbortHandler) // drop the connection mid-response
	}
	w.Left -= len(p)
	return w.ResponseWriter.Write(p)
}

// Unwrap is for http.ResponseController.
func (w *CutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
