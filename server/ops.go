package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The operator's endpoints (kvs extensions, GET and HEAD, routes.go):
//
//	/healthz  200 "ok": the process serves HTTP (for liveness checks and systemd watchdogs).
//	/readyz   200 "ready", or 503 with the reason: the store is open and takes appends now
//	          (Store.Ready: the FS data directory is writable; a cluster's PostgreSQL and object
//	          store answer) and the server is not shutting down (for load balancers). A check's
//	          result answers for readyFresh (readyCheck).
//	/metrics  Prometheus text format (metrics.go): the server's, the store's, Go's and the process's.
//	/events   Server-Sent Events (events.go).
//
// /healthz and /readyz never need a signature: they say nothing but whether the server works. With
// Config.Credentials, /metrics and /events need one like any KVS call (SigV4, header or
// presigned): they name streams. MetricsHandler serves /metrics without it, for a separate
// listener that only the monitoring network reaches (kvs server --metrics-listen).

// readyTimeout bounds a readiness check.
const readyTimeout = 5 * time.Second

// readyFresh is how long a readiness check's result answers /readyz. The FS store's check
// creates, writes, fdatasyncs and removes a file, and /readyz is unsigned: without the reuse,
// anyone who reaches the port could make the disk sync as fast as they can send requests, and
// the uploads' PERSISTED acks wait behind those syncs. Load balancers and Kubernetes ask every
// few seconds, so a second-old answer is as good to them as a fresh one.
const readyFresh = time.Second

// readyCheck runs the store's readiness check for Server.Ready: at most one at a time, which
// every caller that comes while it runs waits for, and its result reused for readyFresh.
type readyCheck struct {
	mu   sync.Mutex
	done chan struct{} // closed when the check in flight ends; nil when none runs
	at   time.Time     // when the last check ended (zero: none yet)
	err  error         // its result
}

// result returns the result of a check that ended less than readyFresh before now, or of the
// one in flight, or of a new one (run, its context bounded by readyTimeout, whatever ctx does);
// or an error if that takes more than readyTimeout or ctx ends first.
func (c *readyCheck) result(ctx context.Context, now func() time.Time, run func(context.Context) error) error {
	c.mu.Lock()
	if c.done == nil && !c.at.IsZero() && now().Sub(c.at) < readyFresh {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.done == nil {
		done := make(chan struct{})
		c.done = done
		go func() { // not ctx's: the callers that join it have their own
			rctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
			err := run(rctx)
			cancel()
			c.mu.Lock()
			c.err, c.at, c.done = err, now(), nil
			c.mu.Unlock()
			close(done)
		}()
	}
	done := c.done
	c.mu.Unlock()
	// A check stuck in a syscall (a hung disk) ignores its context: the callers do not wait
	// for it longer than readyTimeout.
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-t.C:
		return fmt.Errorf("the store's readiness check has not ended in %v: look for a hung disk or an unreachable index or object store", readyTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
// the store's Ready error, from a check at most readyFresh old: readyCheck). GET /readyz answers
// it.
func (s *Server) Ready(ctx context.Context) error {
	if s.media.isClosing() {
		return errShuttingDown
	}
	return s.ready.result(ctx, s.cfg.Now, s.store.Ready)
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As on the main listener (ServeHTTP): nothing here reads a body, and net/http discards
		// what is left of one before it answers, so a trickling body is cut at RequestReadTimeout.
		r.Body = newDeadlineBody(w, r.Body, s.cfg.RequestReadTimeout)
		// And an answer never read is cut after MediaWriteTimeout (statusRecorder).
		mux.ServeHTTP(newAnswerRecorder(w, r, nil, s.media.writeTimeout, s.cfg.RequestReadTimeout), r)
	})
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
