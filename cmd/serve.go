package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

func init() { commands = append(commands, newServeCmd) }

// shutdownTimeout bounds how long a graceful shutdown waits for open requests (live GetMedia
// readers, PutMedia producers) before it closes their connections.
const shutdownTimeout = 10 * time.Second

// retentionInterval is how often the store drops data older than each stream's retention.
const retentionInterval = time.Minute

type serveOptions struct {
	Listen       string
	DataDir      string // "" = the default under $XDG_DATA_HOME or ~/.local/share
	AdvertiseURL string // "" = http://<bound address>
	Memory       bool
}

func (o serveOptions) validate() error {
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:4567 or :4567", o.Listen)
	}
	if o.Memory && o.DataDir != "" {
		return errors.New("--memory keeps nothing on disk: leave out --data-dir")
	}
	if o.AdvertiseURL != "" {
		u, err := url.Parse(o.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--advertise-url %q: want http(s)://host[:port] with no path", o.AdvertiseURL)
		}
	}
	return nil
}

func newServeCmd(env *Env) *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "server [--listen ADDR] [--data-dir DIR | --memory] [--advertise-url URL]",
		Short: "Run the local Kinesis Video Streams server",
		Long: `Run the kvs server: the KVS control plane, PutMedia/GetMedia and the archived-media APIs on one
HTTP listener. Point the AWS CLI or an AWS SDK at it with --endpoint-url / BaseEndpoint; any
credentials and region work, signatures are not checked.

Once listening, it prints the endpoint URL on stdout (with --listen 127.0.0.1:0 that shows the port
the system chose); logs go to stderr. SIGINT or SIGTERM shut it down gracefully: open requests get
up to 10 s to finish, then the store is closed.

Data lives in --data-dir (default $XDG_DATA_HOME/kvs, else ~/.local/share/kvs). --advertise-url is
the URL GetDataEndpoint hands to clients for media (default http://<listen address>, with 0.0.0.0
or [::] replaced by 127.0.0.1); set it when clients reach the server by another name, e.g. from
containers.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError{err}
			}
			return runServe(c.Context(), env, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Listen, "listen", "127.0.0.1:4567", "address to listen on (host:port; port 0 picks a free port)")
	f.StringVar(&o.DataDir, "data-dir", "", "directory for streams and fragments (default $XDG_DATA_HOME/kvs or ~/.local/share/kvs)")
	f.StringVar(&o.AdvertiseURL, "advertise-url", "", "URL returned by GetDataEndpoint (default http://<listen address>)")
	f.BoolVar(&o.Memory, "memory", false, "keep everything in memory, nothing on disk (for experiments)")
	return c
}

// defaultDataDir is $XDG_DATA_HOME/kvs, else $HOME/.local/share/kvs.
func defaultDataDir(env *Env) (string, error) {
	if d := env.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kvs"), nil
	}
	if h := env.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "kvs"), nil
	}
	return "", errors.New("no data directory: set --data-dir, XDG_DATA_HOME or HOME")
}

// advertiseURL derives the default advertised URL from the bound address: an unspecified host
// (0.0.0.0, [::]) becomes 127.0.0.1, which is right for clients on this machine.
func advertiseURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func runServe(ctx context.Context, env *Env, o serveOptions) (err error) {
	log := env.Log
	var st store.Store
	where := "memory"
	if o.Memory {
		st = store.NewMem()
	} else {
		dir := o.DataDir
		if dir == "" {
			if dir, err = defaultDataDir(env); err != nil {
				return usageError{err}
			}
		}
		fs, err := store.OpenFS(dir, store.FSOptions{RetentionInterval: retentionInterval, Logger: log.With("component", "store")})
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		st, where = fs, dir
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("server: close store: %w", cerr)
		}
	}()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	advertise := o.AdvertiseURL
	if advertise == "" {
		advertise = advertiseURL(ln.Addr())
	}
	srv, err := server.New(server.Config{
		Store:        st,
		AdvertiseURL: advertise,
		Region:       env.Config.GetString("region"),
		Log:          log,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("server: %w", err)
	}
	defer srv.Close()
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("kvs server listening", "addr", ln.Addr().String(), "data", where, "advertise_url", advertise)
	if _, err := fmt.Fprintln(env.Stdout, "http://"+ln.Addr().String()); err != nil {
		ln.Close()
		return err
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("server: %w", err)
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
	log.Info("kvs server stopped")
	return nil
}
