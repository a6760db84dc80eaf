package cmd

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/cluster"
	"github.com/openkvs/kvs/server/store"
)

// shutdownTimeout bounds how long a graceful shutdown waits for open requests (live GetMedia
// readers, PutMedia producers) before it closes their connections.
const shutdownTimeout = 10 * time.Second

// retentionInterval is how often the server has the store drop data older than each stream's
// retention (server.Config.RetentionInterval), in memory and on disk alike.
const retentionInterval = time.Minute

type serveOptions struct {
	Listen          string
	DataDir         string // "" = the default under $XDG_DATA_HOME or ~/.local/share
	AdvertiseURL    string // "" = http(s)://<bound address>
	Memory          bool
	Auth            string // "none" or "sigv4"
	CredentialsFile string // with --auth sigv4
	TLSCert, TLSKey string // both or neither: serve HTTPS

	// Cluster mode (both or neither; also from KVS_INDEX and KVS_OBJECTS).
	Index         string // postgres://...
	Objects       string // s3://BUCKET[/PREFIX]?endpoint=&region=&path_style=
	FlushInterval time.Duration
	FlushBytes    int64
	LeaseTTL      time.Duration

	opsOptions // metrics, disk quota, webhooks (serveops.go)
}

// clustered reports whether o asks for cluster mode.
func (o serveOptions) clustered() bool { return o.Index != "" || o.Objects != "" }

func (o serveOptions) validate() error {
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:4567 or :4567", o.Listen)
	}
	if o.Memory && o.DataDir != "" {
		return errors.New("--memory keeps nothing on disk: leave out --data-dir")
	}
	if o.clustered() {
		switch {
		case o.Index == "":
			return errors.New("--objects needs --index: a cluster keeps fragments in object storage and their index in PostgreSQL (or set KVS_INDEX)")
		case o.Objects == "":
			return errors.New("--index needs --objects: a cluster keeps its index in PostgreSQL and fragments in object storage (or set KVS_OBJECTS)")
		case o.Memory || o.DataDir != "":
			return errors.New("--index and --objects keep data in PostgreSQL and object storage: leave out --memory and --data-dir")
		case !strings.HasPrefix(o.Index, "postgres://") && !strings.HasPrefix(o.Index, "postgresql://"):
			return fmt.Errorf("--index %q: want postgres://USER@HOST:PORT/DB", cluster.RedactURL(o.Index))
		}
		if _, err := cluster.ParseObjects(o.Objects); err != nil {
			return fmt.Errorf("--objects: %w", err)
		}
		if o.FlushInterval < 0 || o.FlushBytes < 0 || o.LeaseTTL < 0 {
			return errors.New("--flush-interval, --flush-bytes and --lease-ttl cannot be negative")
		}
	}
	switch o.Auth {
	case "", "none":
		if o.CredentialsFile != "" {
			return errors.New("--credentials-file needs --auth sigv4")
		}
	case "sigv4":
		if o.CredentialsFile == "" {
			return errors.New("--auth sigv4 needs --credentials-file")
		}
	default:
		return fmt.Errorf("--auth %q: want none or sigv4", o.Auth)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.AdvertiseURL != "" {
		u, err := url.Parse(o.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--advertise-url %q: want http(s)://host[:port] with no path", o.AdvertiseURL)
		}
	}
	if err := o.opsOptions.validate(o.clustered(), o.Memory); err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(o.Listen); o.clustered() && o.AdvertiseURL == "" {
		// The default, http://127.0.0.1:PORT, is registered as this node's URL: other nodes would
		// relay to their own loopback and hand it to cameras as GetDataEndpoint, and nodes on
		// several hosts with the same port would share it (each start frees the others' leases).
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("--listen %s with --index and --objects needs --advertise-url: the URL the other nodes and the clients reach this node at, e.g. http://node1.example:4567", o.Listen)
		}
	}
	return nil
}

func newServeCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runServe, &cobra.Command{
		Use:   "server [--listen ADDR] [--data-dir DIR [--max-disk-usage SIZE|N%] | --memory | --index URL --objects URL] [--advertise-url URL] [--auth sigv4 --credentials-file FILE] [--tls-cert FILE --tls-key FILE] [--metrics-listen ADDR] [--webhook URL]...",
		Short: "Run the local Kinesis Video Streams server",
		Long: `Run the kvs server: the KVS control plane, PutMedia/GetMedia and the archived-media APIs on one
HTTP listener. Point the AWS CLI or an AWS SDK at it with --endpoint-url / BaseEndpoint. It listens
on loopback (127.0.0.1:4567) unless --listen says otherwise.

Without --auth, any credentials and region work and signatures are not checked. With --auth sigv4,
every API (control plane, PutMedia, GetMedia, archived media) needs an AWS Signature Version 4 made
with a key from --credentials-file, within 15 minutes of the server's clock (else 403
InvalidSignatureException "Signature expired" or "Signature not yet current", as from AWS); others
get 401 NotAuthorizedException. The file lists one "ACCESS_KEY_ID SECRET" per line, or is an AWS
shared-credentials file ([profile] sections with aws_access_key_id and aws_secret_access_key).
HLS playback URLs carry their own session token and are not signed.

With --tls-cert and --tls-key (PEM files) it serves HTTPS (HTTP/1.1) and GetDataEndpoint hands out
https URLs; clients need to trust the certificate (AWS CLI --ca-bundle, AWS_CA_BUNDLE).

Once listening, it prints the endpoint URL on stdout (with --listen 127.0.0.1:0 that shows the port
the system chose; on 0.0.0.0 or [::], the URL names 127.0.0.1); logs go to stderr, starting with what the store repaired after a crash.
SIGINT or SIGTERM shut it down gracefully: uploads finish the fragment they are sending (acked
PERSISTED) and end with ERROR 5000 (each producer then gets up to 2 s to read it before its
connection closes), live GetMedia responses end, other requests get up to 10 s to finish; then the
store is closed.

Data lives in --data-dir (default $XDG_DATA_HOME/kvs, else ~/.local/share/kvs; on Windows without
HOME, %LOCALAPPDATA%\kvs). --advertise-url is
the URL GetDataEndpoint hands to clients for media (default http://<listen address>; listening on
0.0.0.0 or [::], the scheme and host each client reached the server at); set it when clients reach
the server by another name than the one they should use for media, e.g. behind a proxy.

Cluster mode: with --index (a PostgreSQL URL) and --objects (an S3-compatible bucket), this server
is one of N stateless nodes sharing those: any node answers any request, each stream has one
writer node under a lease, fragments are batched into objects (--flush-interval, --flush-bytes)
and PERSISTED once the object is stored and its index rows committed. --advertise-url must be the
URL the other nodes and the clients reach this node at. See docs/cluster.md.

` + opsHelp,
	})
	c.PreRunE = func(*cobra.Command, []string) error { // the environment fills what the flags left out
		o.Index = cmp.Or(o.Index, env.Getenv("KVS_INDEX"))
		o.Objects = cmp.Or(o.Objects, env.Getenv("KVS_OBJECTS"))
		o.WebhookSecret = cmp.Or(o.WebhookSecret, env.Getenv("KVS_WEBHOOK_SECRET"))
		return nil
	}
	f := c.Flags()
	f.StringVar(&o.Listen, "listen", "127.0.0.1:4567", "address to listen on (host:port; port 0 picks a free port)")
	f.StringVar(&o.DataDir, "data-dir", "", "directory for streams and fragments (default $XDG_DATA_HOME/kvs or ~/.local/share/kvs; Windows without HOME: %LOCALAPPDATA%\\kvs)")
	f.StringVar(&o.AdvertiseURL, "advertise-url", "", "URL returned by GetDataEndpoint (default http://<listen address>)")
	f.BoolVar(&o.Memory, "memory", false, "keep everything in memory, nothing on disk (for experiments)")
	f.StringVar(&o.Auth, "auth", "none", "request authentication: none or sigv4")
	f.StringVar(&o.CredentialsFile, "credentials-file", "", "access keys for --auth sigv4 (ACCESS_KEY_ID SECRET lines, or an AWS credentials file)")
	f.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with")
	f.StringVar(&o.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.Index, "index", "", "cluster mode: PostgreSQL URL of the stream registry and fragment index, postgres://USER@HOST:PORT/DB (env KVS_INDEX)")
	f.StringVar(&o.Objects, "objects", "", "cluster mode: object storage for fragments, s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true (env KVS_OBJECTS)")
	f.DurationVar(&o.FlushInterval, "flush-interval", cluster.DefaultFlushInterval, "cluster mode: how long fragments of all streams collect into one object before it is written (0: one object per fragment)")
	f.Int64Var(&o.FlushBytes, "flush-bytes", cluster.DefaultFlushBytes, "cluster mode: write the object earlier once it holds this many bytes")
	f.DurationVar(&o.LeaseTTL, "lease-ttl", cluster.DefaultLeaseTTL, "cluster mode: how long a stream's write lease lasts unrenewed (how long a dead node's streams wait)")
	addOpsFlags(f, &o.opsOptions)
	return c
}

// defaultDataDir is $XDG_DATA_HOME/kvs, else $HOME/.local/share/kvs, else (Windows, where HOME is
// usually not set: kvs server without --data-dir failed there) %LOCALAPPDATA%\kvs.
func defaultDataDir(env *Env) (string, error) {
	if d := env.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kvs"), nil
	}
	if h := env.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "kvs"), nil
	}
	if d := env.Getenv("LOCALAPPDATA"); d != "" {
		return filepath.Join(d, "kvs"), nil
	}
	return "", errors.New("no data directory: set --data-dir, XDG_DATA_HOME or HOME")
}

// advertiseURL derives the default advertised URL from the bound address: an unspecified host
// (0.0.0.0, [::]) becomes 127.0.0.1, which is right for clients on this machine.
func advertiseURL(scheme string, addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// isUnspecified reports whether addr is every interface (0.0.0.0, [::]).
func isUnspecified(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// isLoopback reports whether addr only accepts connections from this machine.
func isLoopback(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadServeSecurity reads the credentials file and the TLS key pair named by o.
func loadServeSecurity(o serveOptions) (server.Credentials, *tls.Config, error) {
	var creds server.Credentials
	if o.Auth == "sigv4" {
		f, err := os.Open(o.CredentialsFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--credentials-file: %w", err)
		}
		defer f.Close()
		if creds, err = server.ParseCredentials(f); err != nil {
			return nil, nil, fmt.Errorf("--credentials-file %s: %w", o.CredentialsFile, err)
		}
	}
	var tc *tls.Config
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return creds, tc, nil
}

// openStore opens the store o names: the cluster's (PostgreSQL and object storage) with the
// membership the server needs, the FS store in the data directory, or memory. where says which,
// for the log.
func openStore(ctx context.Context, env *Env, o serveOptions, advertise string, reg prometheus.Registerer) (st store.Store, c server.Cluster, key []byte, where string, err error) {
	log := env.Log
	switch {
	case o.clustered():
		objects, _ := cluster.ParseObjects(o.Objects) // checked by validate
		cs, err := cluster.Open(ctx, cluster.Config{Index: o.Index, Objects: objects, NodeURL: advertise,
			FlushInterval: o.FlushInterval, FlushBytes: o.FlushBytes, LeaseTTL: o.LeaseTTL, Log: log.With("component", "cluster"),
			Metrics: reg})
		if err != nil {
			return nil, nil, nil, "", withHint(fmt.Errorf("server: %w", err),
				"Check --index (KVS_INDEX) and --objects (KVS_OBJECTS), and that PostgreSQL and the object store are up; S3 credentials come from the AWS SDK's chain (AWS_ACCESS_KEY_ID, ~/.aws).")
		}
		return cs, clusterMembership{cs}, cs.SessionKey(), "cluster " + cluster.RedactURL(o.Index) + " + " + objects.String(), nil
	case o.Memory:
		return store.NewMem(), nil, nil, "memory", nil
	}
	dir := o.DataDir
	if dir == "" {
		if dir, err = defaultDataDir(env); err != nil {
			return nil, nil, nil, "", usageError{err}
		}
	}
	opts := store.FSOptions{Logger: log.With("component", "store"), Metrics: reg}
	if o.MaxDiskUsage != "" {
		opts.MaxDiskBytes, opts.MaxDiskPercent, _ = parseDiskLimit(o.MaxDiskUsage) // checked by validate
	}
	if o.WrittenCache != "" {
		opts.WrittenCacheBytes, _ = parseWrittenCache(o.WrittenCache) // checked by validate
	}
	fs, err := store.OpenFS(dir, opts)
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("server: %w", err)
	}
	logRecovery(log, fs.Recovered())
	return fs, nil, nil, dir, nil
}

// clusterMembership is the server's view of a cluster store.
type clusterMembership struct{ *cluster.Store }

func (c clusterMembership) Members(ctx context.Context) ([]server.ClusterNode, error) {
	nodes, err := c.Nodes(ctx)
	out := make([]server.ClusterNode, len(nodes))
	for i, n := range nodes {
		out[i] = server.ClusterNode{ID: n.ID, URL: n.URL, Started: n.Started, Heartbeat: n.Heartbeat, Streams: n.Streams, Self: n.Self}
	}
	return out, err
}

func runServe(ctx context.Context, env *Env, o serveOptions) (err error) {
	log := env.Log
	creds, tlsConfig, err := loadServeSecurity(o)
	if err != nil {
		return usageError{err}
	}
	region := client.Region(ctx, env.Config.GetString("region")) // as the client commands sign
	if err := server.ValidRegion(region); err != nil {
		return usageErrorf("--region: %v", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.Listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return withHint(fmt.Errorf("server: --listen %s: the address is in use", o.Listen),
			"Another program, perhaps another kvs server, listens there: stop it, or give --listen another port (port 0 picks a free one).")
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	ln = server.Listener(ln) // reads of up to 64 KiB, not net/http's 4 KiB
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
		ln = tls.NewListener(ln, tlsConfig)
	}
	// validate lets the URL end in "/"; the cluster registers it as this node's URL, which others
	// answer GetDataEndpoint with and append API paths to ("//putMedia" would be a 404).
	advertise := strings.TrimSuffix(o.AdvertiseURL, "/")
	// serverAdvertise is the server's Config.AdvertiseURL. Listening on every interface without
	// --advertise-url, it is left empty so that GetDataEndpoint and the HLS URLs name the scheme
	// and Host each client reached this server at: 127.0.0.1 would send a camera on the network
	// to its own loopback. A cluster node needs one URL the other nodes reach it at.
	serverAdvertise := advertise
	if advertise == "" {
		advertise = advertiseURL(scheme, ln.Addr())
		serverAdvertise = advertise
		if !o.clustered() && isUnspecified(ln.Addr()) {
			serverAdvertise = ""
		}
	}
	// Serve at once: while the store opens (and recovers after a crash), /healthz answers and
	// everything else is 503 (serveops.go's starting); then the server takes over.
	var handler atomic.Pointer[http.Handler]
	handler.Store(ptr[http.Handler](http.HandlerFunc(starting)))
	hs := newHTTPServer(ctx, log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	// --metrics-listen serves /healthz (and a 503 /readyz) from the start too: a liveness probe
	// pointed at it must not fail, and restart the process, while the store recovers.
	var ops *http.Server
	var opsHandler atomic.Pointer[http.Handler]
	opsHandler.Store(ptr[http.Handler](http.HandlerFunc(starting)))
	opsErr := make(chan error, 1)
	if o.MetricsListen != "" {
		oln, err := lc.Listen(ctx, "tcp", o.MetricsListen)
		if err != nil {
			_ = hs.Close()
			<-serveErr
			return fmt.Errorf("server: --metrics-listen %s: %w", o.MetricsListen, err)
		}
		ops = newHTTPServer(ctx, log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*opsHandler.Load()).ServeHTTP(w, r) }))
		go func() { opsErr <- ops.Serve(oln) }()
		log.Info("metrics listening", "addr", oln.Addr().String(), "paths", "/metrics /healthz /readyz")
	}
	ready := false
	defer func() {
		if !ready { // failed before serving for real
			_ = hs.Close()
			<-serveErr
			if ops != nil {
				_ = ops.Close()
				<-opsErr
			}
		}
	}()

	reg := prometheus.NewRegistry()
	st, membership, sessionKey, where, err := openStore(ctx, env, o, advertise, reg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("server: close store: %w", cerr)
		}
	}()
	maxStreams := o.MetricsMaxStreams
	if maxStreams == 0 {
		maxStreams = -1 // none (the Config's 0 is the default)
	}
	srv, err := server.New(server.Config{
		Store:               st,
		Cluster:             membership,
		SessionKey:          sessionKey,
		AdvertiseURL:        serverAdvertise,
		Region:              region,
		Log:                 log,
		Credentials:         creds,
		RetentionInterval:   retentionInterval,
		ImageDecoder:        probeImageDecoder(ctx, log),
		Registry:            reg,
		MetricsMaxStreams:   maxStreams,
		Webhooks:            o.Webhooks,
		WebhookSecret:       o.WebhookSecret,
		WebhookPersisted:    o.WebhookPersisted,
		GetMediaIdleTimeout: o.GetMediaIdle,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer srv.Close()
	// Shutdown waits for open requests: Server.Close ends live GetMedia responses and lets uploads
	// finish their current fragment, so that it does not wait out shutdownTimeout.
	hs.RegisterOnShutdown(func() { _ = srv.Close() })
	opsHandler.Store(ptr[http.Handler](srv.OpsHandler()))
	handler.Store(ptr[http.Handler](srv))
	ready = true
	if creds == nil && !isLoopback(ln.Addr()) {
		log.Warn("listening beyond loopback without authentication: anyone who reaches this port can read, write and delete streams (see --auth sigv4)", "addr", ln.Addr().String())
	}
	log.Info("kvs server listening", "addr", ln.Addr().String(), "data", where, "advertise_url", cmp.Or(serverAdvertise, "(the Host of each request)"),
		"auth", cmp.Or(o.Auth, "none"), "keys", len(creds), "tls", tlsConfig != nil, "webhooks", len(o.Webhooks))
	// The URL to point --endpoint at on this machine: on every interface, 127.0.0.1, not the
	// wildcard address (which Go shows as [::] for 0.0.0.0 too).
	if _, err := fmt.Fprintln(env.Stdout, advertiseURL(scheme, ln.Addr())); err != nil {
		ready = false
		return err
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("server: %w", err)
	case err := <-opsErr:
		return fmt.Errorf("server: --metrics-listen: %w", err)
	case <-ctx.Done():
	}
	log.Info("kvs server shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("graceful shutdown timed out; closing open connections", "err", err)
		_ = hs.Close()
	}
	<-serveErr // http.ErrServerClosed
	if ops != nil {
		_ = ops.Shutdown(sctx)
		<-opsErr
	}
	_ = srv.Close() // waits for uploads still in their lingering close, which Shutdown does not
	log.Info("kvs server stopped")
	return nil
}

func ptr[T any](v T) *T { return &v }

// newHTTPServer is the http.Server of kvs server's listeners: HTTP/1.1 only, also over TLS
// (PutMedia is full duplex on one HTTP/1.1 exchange, as producers expect, kvs-api.md §5.3, and its
// early error answers rely on Connection: close).
func newHTTPServer(ctx context.Context, log *slog.Logger, h http.Handler) *http.Server {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    server.MaxHeaderBytes, // headers stay in memory as long as their request runs
		// Keep-alive connections that send nothing are closed, so idle sockets cannot pile up.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: server.ConnContext, // the connections of server.Listener pace their writes
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	hs.Protocols = &protocols
	return hs
}

// logRecovery logs one line summing up what OpenFS repaired (the store logs each repair itself),
// so that a restart after a crash says at once whether anything was cut: level INFO when nothing
// was repaired, WARN otherwise.
func logRecovery(log *slog.Logger, reports []store.RecoveryReport) {
	var cut int64
	var dropped, reindexed int
	for _, r := range reports {
		cut += r.BytesCut
		dropped += r.Dropped
		reindexed += r.Reindexed
	}
	level := slog.LevelInfo
	if len(reports) > 0 {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "store recovery", "repairs", len(reports), "bytes_cut", cut,
		"index_entries_dropped", dropped, "records_reindexed", reindexed)
}
