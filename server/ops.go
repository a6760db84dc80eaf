package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The operator's endpoints (kvs extensions, GET and HEAD, routes.go):
//
//	/healthz  200 "ok": the process serves HTTP (for liveness checks and systemd watchdogs).
//	/readyz   200 "ready", or 503 with the reason: the store is open and takes appends now
//	          (Store.Ready: the FS data directory is writable; a cluster's PostgreSQL and object
//	          store answer) and the server is not shutting down (for load balancers).
//	/metrics  Prometheus text format (metrics.go): the server's, the store's, Go's and the process's.
//	/events   Server-Sent Events (events.go).
//
// /healthz and /readyz never need a signature: they say nothing but whether the server works. With
// Config.Credentials, /metrics and /events need one like any KVS call (SigV4, header or
// presigned): they name streams. MetricsHandler serves /metrics without it, for a separate
// listener that only the monitoring network reaches (kvs server --metrics-listen).

// readyTimeout bounds a readiness check.
const readyTimeout = 5 * time.Second

var errShuttingDown = errors.New("the server is shutting down: uploads are draining")

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.Ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = fmt.Fprintln(w, "ready")
}

// Ready reports whether the server takes uploads now: nil, or why not (it is shutting down, or
// the store's Ready error). GET /readyz answers it.
func (s *Server) Ready(ctx context.Context) error {
	if s.media.isClosing() {
		return errShuttingDown
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return s.store.Ready(ctx)
}

// MetricsHandler serves the Prometheus metrics of GET /metrics without authentication, for a
// listener of its own (see the top of ops.go).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// OpsHandler serves /metrics, /healthz and /readyz without authentication and nothing else, for
// a listener of its own (kvs server --metrics-listen).
func (s *Server) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) { l.s.log.Warn("metrics: " + fmt.Sprint(v...)) }

// signed wraps a GET endpoint that needs a signature when authentication is on.
func (s *Server) signed(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credentials != nil {
			if err := s.authenticate(r); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		h.ServeHTTP(w, r)
	}
}
