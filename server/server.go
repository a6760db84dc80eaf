package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openkvs/kvs/internal/every"
	"github.com/openkvs/kvs/server/store"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultRegion = "us-east-1"
	// DefaultAccountID is the account in every ARN when Config.AccountID is empty. It is the
	// all-zero account that LocalStack and other local emulators also use, so it cannot be mistaken
	// for a real account.
	DefaultAccountID = "000000000000"
	// DefaultMaxRequestBody caps control-plane request bodies (bytes). The largest legal request,
	// CreateStream with 50 maximal tags, is about 40 KiB of JSON.
	DefaultMaxRequestBody = 1 << 20
	// DefaultRequestReadTimeout is the default Config.RequestReadTimeout.
	DefaultRequestReadTimeout = 30 * time.Second
	// DefaultRetentionInterval is the default Config.RetentionInterval.
	DefaultRetentionInterval = time.Minute
	// MaxHeaderBytes is the http.Server MaxHeaderBytes kvs server runs with: a request's line and
	// headers are kept in memory for as long as it runs (a GetMedia follower, a PutMedia upload:
	// hours), and net/http's default of 1 MiB let each such request hold a megabyte. KVS clients
	// send well under 8 KiB (SigV4 headers, a session token); 64 KiB leaves room for a browser's
	// cookies on the console. More is answered 431.
	MaxHeaderBytes = 64 << 10
)

// Config configures a Server. Store is required; every other field has a default.
type Config struct {
	// Store keeps the streams. The Server does not close it: whoever opened it does.
	Store store.Store
	// AdvertiseURL is what GetDataEndpoint returns for every APIName, e.g. "http://127.0.0.1:4567":
	// scheme and host[:port] only. Empty: derived per request from its Host header and whether the
	// connection is TLS.
	AdvertiseURL string
	// Region goes into stream ARNs and the default KMS key ARN (default us-east-1). The server
	// answers requests signed for any region.
	Region string
	// AccountID is the 12-digit account in ARNs (default DefaultAccountID).
	AccountID string
	// Log receives one debug line per request and error lines for internal failures (default: discard).
	Log *slog.Logger
	// MaxRequestBody caps the JSON body of control-plane and archived-media requests in bytes
	// (default DefaultMaxRequestBody). It does not apply to PutMedia.
	MaxRequestBody int64
	// Now returns the current time (default time.Now); tests replace it.
	Now func() time.Time
	// RequestReadTimeout bounds reading the body of a request other than PutMedia (a JSON
	// document): a client that sends it slower than this gets 400 InvalidArgumentException
	// instead of holding a connection forever (default 30 s). It ends when the body has been read,
	// so it never cuts a streaming response.
	RequestReadTimeout time.Duration
	// RetentionInterval is how often the Server calls Store.EnforceRetention(Now()) to delete
	// fragments older than their stream's retention, from New until Close (default 1 min;
	// negative: never, e.g. when another process of a cluster does it). The store has no
	// schedule of its own.
	RetentionInterval time.Duration
	// Credentials, when not nil, turns on authentication: every request must carry an AWS
	// Signature Version 4 (Authorization header or presigned query) made with one of these keys
	// within MaxClockSkew of Now (else 403 InvalidSignatureException, as from AWS), else it gets
	// 401 NotAuthorizedException (AccessDeniedException for the *Resource tagging operations)
	// before any handler runs. See auth.go. Nil (the
	// default) accepts every request, signed or not.
	Credentials Credentials
	// Cluster, when not nil, makes this server one node of a cluster sharing Store (see
	// Cluster): AdvertiseURL must be set then, to the URL other nodes reach this one at.
	Cluster Cluster
	// SessionKey signs HLS session tokens (HMAC-SHA256), which carry their session so that any
	// server with the same key serves them: the nodes of a cluster share it. Nil: a random key
	// per process, so tokens end with a restart. At least 16 bytes when set.
	SessionKey []byte

	// Media data path (media.go); zero values get the defaults named.

	// MaxFragmentDuration is the longest fragment PutMedia accepts (default 10 s, kvs-api.md §5.5);
	// a frame beyond it ends the upload with ERROR 4002.
	MaxFragmentDuration time.Duration
	// IdleAckInterval: PutMedia sends {"EventType":"IDLE"} after this long without another ack
	// (default 3 s).
	IdleAckInterval time.Duration
	// MediaWriteTimeout bounds each write of a streaming response (one ack, one chunk): a client
	// that stops reading is dropped after it, without holding up anyone else (default 30 s).
	MediaWriteTimeout time.Duration
	// PutMediaReadTimeout ends a PutMedia upload that sends no byte for this long with ERROR 4000
	// (default 30 s; KVS gives up after about 30 s without data).
	PutMediaReadTimeout time.Duration
	// GetMediaIdleTimeout ends a GetMedia response normally once it has waited this long at the
	// live edge without a new fragment. 0 (the default) follows the stream until the client leaves.
	GetMediaIdleTimeout time.Duration

	// GetImages (images.go, imageplan.go).

	// ImageDecoder decodes the pictures of GetImages. Nil: the ffmpeg program on PATH, if there
	// is one (kvs server adds the in-process OpenH264 decoder where the build has it); with no
	// decoder, GetImages answers UnsupportedStreamMediaTypeException for media it would decode.
	ImageDecoder ImageDecoder
	// ImageDecodes bounds the GetImages decoding jobs running at once, across requests (default
	// DefaultImageDecodes(): half the cores).
	ImageDecodes int
	// MaxImageRequests bounds the GetImages requests served at once; more get
	// ClientLimitExceededException (default 4 × ImageDecodes).
	MaxImageRequests int

	// Operations (ops.go, metrics.go, events.go, webhook.go).

	// Registry is where the server registers its metrics (with the Go and process collectors
	// and the store's sizes), and what GET /metrics serves; the caller may register more (a
	// store's own) in it. Nil: a new registry.
	Registry *prometheus.Registry
	// MetricsMaxStreams is how many streams get series of their own in the per-stream ingest
	// counters (the first seen since the start); the others share stream="(other)" (default
	// DefaultMetricsMaxStreams; negative: none gets its own).
	MetricsMaxStreams int
	// Webhooks are URLs that get every event as a JSON POST (webhook.go).
	Webhooks []string
	// WebhookSecret, when not empty, signs each webhook body: X-Kvs-Signature: sha256=<hex
	// HMAC-SHA256 of the body> (SignWebhook).
	WebhookSecret string
	// WebhookPersisted sends fragment.persisted events (one per fragment) to the webhooks too.
	WebhookPersisted bool
	// WebhookQueue is how many events each webhook may fall behind by before new ones are dropped
	// (default DefaultWebhookQueue).
	WebhookQueue int
	// WebhookBackoff is the wait before a failed webhook POST is tried again, doubling up to
	// 30 s (default DefaultWebhookBackoff).
	WebhookBackoff time.Duration
}

// Server serves the KVS HTTP APIs on one mux: every route is in routes.go. It is an http.Handler
// and is safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store store.Store

	closeOnce     sync.Once
	stopRetention func()        // ends the retention loop and waits for it (nil: none)
	purgeWait     time.Duration // how long an UpdateDataRetention decrease purges before it answers (control.go)
	lastCreated   atomic.Int64  // the newest creation time given to a stream, epoch ms (creationMillis)

	metrics  *metrics      // Prometheus collectors (metrics.go)
	events   *eventHub     // events to webhooks and GET /events (events.go)
	media    *media        // the media data path (media.go): live cache and notifier, PutMedia sessions
	playback *playback     // HLS, MPEG-DASH and GetClip (hls.go, dash.go, clip.go)
	images   *imageService // GetImages (images.go, imageplan.go)
	ready    readyCheck    // Ready's store check, shared by its callers (ops.go)

	// routes are the KVS operations (POST); getRoutes the only endpoints served for GET and
	// HEAD: the HLS and DASH playback URLs (real KVS serves them as GETs under /hls/v1/ and
	// /dash/v1/) and the web console. A getRoutes key ending in "/" matches that prefix; see
	// getRoute.
	routes, getRoutes map[string]http.HandlerFunc

	// crossOrigin refuses the operations to cross-site requests of browsers (CSRF): with
	// authentication off, any web page could otherwise have its visitor's browser post to a kvs
	// on their machine or network (a plain-text POST needs no CORS preflight), e.g. tag a stream
	// kvs:max-bytes=1 and so delete its data. SDKs, the CLI and producers send neither
	// Sec-Fetch-Site nor Origin and are not affected; the console is same-origin.
	crossOrigin *http.CrossOriginProtection
}

var accountIDPattern = regexp.MustCompile(`^[0-9]{12}$`)
var regionPattern = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// ValidRegion reports whether region can stand in the server's ARNs (Config.Region), so that a
// command can refuse a bad one before it opens anything.
func ValidRegion(region string) error {
	if !regionPattern.MatchString(region) {
		return fmt.Errorf("region %q: want lower-case letters, digits and dashes, e.g. eu-west-1", region)
	}
	return nil
}

// New validates cfg, fills in defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if err := ValidRegion(cfg.Region); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.AccountID == "" {
		cfg.AccountID = DefaultAccountID
	}
	if !accountIDPattern.MatchString(cfg.AccountID) {
		return nil, fmt.Errorf("server: account id %q: want 12 digits", cfg.AccountID)
	}
	if cfg.AdvertiseURL != "" {
		u, err := normalizeAdvertiseURL(cfg.AdvertiseURL)
		if err != nil {
			return nil, err
		}
		cfg.AdvertiseURL = u
	}
	if cfg.Cluster != nil && cfg.AdvertiseURL == "" {
		return nil, errors.New("server: Config.AdvertiseURL is required with Config.Cluster: other nodes relay to it")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRequestBody <= 0 {
		cfg.MaxRequestBody = DefaultMaxRequestBody
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestReadTimeout <= 0 {
		cfg.RequestReadTimeout = DefaultRequestReadTimeout
	}
	switch {
	case cfg.SessionKey == nil:
		cfg.SessionKey = make([]byte, 32)
		_, _ = rand.Read(cfg.SessionKey) // crypto/rand.Read never fails (Go 1.24+)
	case len(cfg.SessionKey) < 16:
		return nil, errors.New("server: Config.SessionKey must be at least 16 bytes")
	}
	if cfg.RetentionInterval == 0 {
		cfg.RetentionInterval = DefaultRetentionInterval
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	switch {
	case cfg.MetricsMaxStreams == 0:
		cfg.MetricsMaxStreams = DefaultMetricsMaxStreams
	case cfg.MetricsMaxStreams < 0:
		cfg.MetricsMaxStreams = 0
	}
	if cfg.WebhookQueue <= 0 {
		cfg.WebhookQueue = DefaultWebhookQueue
	}
	if cfg.WebhookBackoff <= 0 {
		cfg.WebhookBackoff = DefaultWebhookBackoff
	}
	s := &Server{cfg: cfg, log: cfg.Log, store: cfg.Store, purgeWait: decreasePurgeWait}
	var err error
	if s.metrics, err = newMetrics(s, cfg.Registry); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if s.events, err = newEventHub(s); err != nil {
		return nil, err
	}
	s.media = newMedia(s)
	s.playback = newPlayback(s)
	s.images = newImageService(s)
	s.routes, s.getRoutes = s.postRoutes(), s.getRoutesTable()
	s.crossOrigin = http.NewCrossOriginProtection()
	if cfg.AdvertiseURL != "" { // the console reached through that URL, behind a proxy that rewrites Host
		if err := s.crossOrigin.AddTrustedOrigin(cfg.AdvertiseURL); err != nil {
			return nil, fmt.Errorf("server: advertise URL as an origin: %w", err)
		}
	}
	if cfg.RetentionInterval > 0 {
		s.startRetention(cfg.RetentionInterval)
	}
	return s, nil
}

// startRetention runs Store.EnforceRetention every interval until Close, which waits for it.
func (s *Server) startRetention(interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		every.Tick(ctx, interval, s.enforceRetention)
	}()
	s.stopRetention = func() {
		cancel()
		<-done
	}
}

// enforceRetention runs one retention pass as of Now and logs its outcome.
func (s *Server) enforceRetention(ctx context.Context) {
	n, err := s.store.EnforceRetention(ctx, s.cfg.Now())
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Error("retention", "fragments_deleted", n, "err", err)
	case n > 0:
		s.log.Info("retention", "fragments_deleted", n)
	}
}

// normalizeAdvertiseURL checks that u is scheme://host[:port] and strips a trailing slash: clients
// append the API path to it by string concatenation (see kvs-api.md §12).
func normalizeAdvertiseURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil {
		return "", fmt.Errorf("server: advertise url %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("server: advertise url %q: want http(s)://host[:port] with no path", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Close stops what the Server runs and waits for it: live GetMedia responses and GET /events
// end, PutMedia uploads drain (shutdown.go), the retention loop stops; with webhooks, it waits
// for the draining uploads (at most closeUploadsWait), so that their upload.ended events go out,
// then lets the webhooks deliver what is queued for up to 2 s. Every call returns only once no
// upload is in its lingering close (each lasts at most putMediaLingerTime): those connections
// are hijacked, which http.Server.Shutdown does not wait for, so a process that exits after
// Shutdown and Close does not reset them before the producers have read their last acks. It
// does not close the Store. Safe to call more than once.
func (s *Server) Close() error {
	defer waitZero(&s.media.lingering, putMediaLingerTime+time.Second)
	s.closeOnce.Do(func() {
		s.media.close()
		s.events.endSubscribers()
		if s.stopRetention != nil {
			s.stopRetention()
		}
		if len(s.events.hooks) > 0 {
			waitZero(&s.media.uploads, closeUploadsWait)
		}
		s.events.close()
	})
	return nil
}

// closeUploadsWait bounds how long Close waits for draining uploads before the webhooks stop:
// the fragment being received may take putMediaDrainGrace, then its PERSISTED.
const closeUploadsWait = putMediaDrainGrace + 2*time.Second

// streamDeleted runs after DeleteStream removed st from the store: its live readers and uploads
// end, its HLS sessions are forgotten, its metric series go. It runs after the store's delete,
// not atomically with it: a stream created again under the name meanwhile is another stream (its
// own ARN), and its buffer, readers and uploads are left alone.
func (s *Server) streamDeleted(st store.Stream) {
	s.media.streamDeleted(st)
	s.playback.streamDeleted(st.Name)
	s.metrics.streams.drop(st.Name, st.ARN)
	s.events.publish(&Event{Type: EventStreamDeleted, Stream: st.Name})
}

// ServeHTTP dispatches on the exact, case-sensitive path. Every KVS operation is a POST; other
// methods get 405 and unknown paths 404, both with the usual JSON error body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := newRequestID()
	w.Header().Set("x-amzn-RequestId", id)
	rec := newAnswerRecorder(w, r, s.metrics.egress[r.URL.Path], s.media.writeTimeout, s.cfg.RequestReadTimeout)
	r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, requestInfo{id: id, endpoint: s.dataEndpoint(r)}))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
				panic(p)
			}
			s.log.Error("handler panic", "path", r.URL.Path, "request_id", id, "panic", p)
			if !rec.wrote {
				s.writeError(rec, r, fmt.Errorf("panic: %v", p))
			}
		}
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration", time.Since(start), "request_id", id)
	}()

	// A body is read within RequestReadTimeout (PutMedia's streams: see putSession.Read), also
	// where nothing reads it (the GET routes, a 405): net/http discards what is left of it before
	// it writes the answer, and a trickling one held the connection and the handler for good.
	upload := r.URL.Path == "/putMedia" && r.Method == http.MethodPost
	if !upload {
		r.Body = newDeadlineBody(rec, r.Body, s.cfg.RequestReadTimeout)
	}
	// The GET exception (HLS and DASH playback, console); every KVS operation stays POST-only.
	if gh := s.getRoute(r); gh != nil {
		gh(rec, r)
		return
	}
	if err := s.crossOrigin.Check(r); err != nil {
		rec.Header().Set("Connection", "close")
		s.writeError(rec, r, &APIError{Code: "AccessDeniedException", Status: http.StatusForbidden,
			Message: "A web page of another origin (" + r.Header.Get("Origin") + ") may not call the KVS operations through a browser. " +
				"If this is kvs's console behind a proxy that rewrites Host, start kvs server with --advertise-url set to the URL the browser opens."})
		return
	}
	if s.cfg.Credentials != nil {
		if err := s.authenticate(r); err != nil {
			rec.Header().Set("Connection", "close") // do not drain an unauthenticated body
			s.writeError(rec, r, err)
			return
		}
	}
	h, ok := s.routes[r.URL.Path]
	switch {
	case !ok:
		s.writeError(rec, r, &APIError{Code: "UnknownOperationException", Status: http.StatusNotFound,
			Message: "No operation is served at " + r.URL.Path + "."})
	case r.Method != http.MethodPost:
		rec.Header().Set("Allow", http.MethodPost)
		s.writeError(rec, r, &APIError{Code: "MethodNotAllowedException", Status: http.StatusMethodNotAllowed,
			Message: "Only POST is supported."})
	default:
		h(rec, r)
	}
}

// getRoute returns the GET/HEAD handler for r: an exact getRoutes path, else the longest prefix
// key ending in "/" (the console's "/"). Paths of KVS operations are never GET routes, so a GET to
// them still gets 405.
func (s *Server) getRoute(r *http.Request) http.HandlerFunc {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil
	}
	if _, op := s.routes[r.URL.Path]; op {
		return nil
	}
	if h, ok := s.getRoutes[r.URL.Path]; ok {
		return h
	}
	var best string
	for p := range s.getRoutes {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p) && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return nil
	}
	return s.getRoutes[best]
}

type requestInfoKey struct{}

// requestInfo is what ServeHTTP puts in a request's context for the handlers: its
// x-amzn-RequestId and the data endpoint to name to this client (dataEndpoint).
type requestInfo struct {
	id, endpoint string
}

func infoOf(ctx context.Context) requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(requestInfo)
	return info
}

// requestID returns the x-amzn-RequestId of the request being served.
func requestID(r *http.Request) string { return infoOf(r.Context()).id }

// endpointOf returns the data endpoint of the request whose context ctx is (see dataEndpoint).
func endpointOf(ctx context.Context) string { return infoOf(ctx).endpoint }

// newRequestID returns a random (version 4) UUID in its canonical text form.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], b[10:])
	return string(buf[:])
}

// dataEndpoint is GetDataEndpoint's answer for r: the advertised URL, else the scheme and Host the
// client used to reach us. X-Forwarded-* headers are not trusted; behind a proxy, set AdvertiseURL.
func (s *Server) dataEndpoint(r *http.Request) string {
	if s.cfg.AdvertiseURL != "" {
		return s.cfg.AdvertiseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "127.0.0.1"
	}
	return scheme + "://" + host
}
