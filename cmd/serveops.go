package cmd

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/openkvs/kvs/server"
	"github.com/openkvs/kvs/server/store"
)

// opsOptions are kvs server's flags for operators: metrics, disk quota, webhooks.
type opsOptions struct {
	MetricsListen     string   // "" = /metrics on the main listener only
	MetricsMaxStreams int      // per-stream series (server.Config.MetricsMaxStreams)
	MaxDiskUsage      string   // "" | SIZE | N%
	WrittenCache      string   // "" (the store's default) | SIZE | all
	Webhooks          []string // URLs
	WebhookSecret     string   // also KVS_WEBHOOK_SECRET
	WebhookPersisted  bool
	GetMediaIdle      time.Duration // server.Config.GetMediaIdleTimeout
}

const opsHelp = `Operating it (see README, "Operating kvs"):

  GET /healthz   200 while the process serves HTTP (liveness, systemd).
  GET /readyz    200 once the store is open and takes appends (FS: the data directory is writable;
                 cluster: PostgreSQL and the object store answer), 503 with the reason otherwise,
                 also while the store recovers at start and once shutdown begins (load balancers).
  GET /metrics   Prometheus metrics (docs/grafana-kvs.json is a dashboard for them). With
                 --auth sigv4 it needs a signature like any API call; --metrics-listen ADDR serves
                 /metrics, /healthz and /readyz unsigned on an address of their own (bind it where
                 only your monitoring reaches). --metrics-max-streams N: how many streams get
                 per-stream ingest series (the others share stream="(other)").
  GET /events    Server-Sent Events: stream created/deleted, upload started/ended, ERROR acks;
                 ?fragments=1 adds one event per PERSISTED fragment, ?stream=NAME filters.

--max-disk-usage 500GB or 90% (data directory only): before the store would take more than that
(a size, at least 1MiB: its segment files and index; a percentage: of the filesystem holding --data-dir, every
file on it counted, as df does), the oldest fragments across all streams are deleted, whole
segments at a time, before retention would; ingest is never refused for old data. Each deletion is
logged and counted. A stream tagged kvs:max-bytes=SIZE (a kvs extension) keeps at most that much,
oldest deleted first, in every mode (a cluster applies it in its cleanup, every minute).

--written-cache SIZE (data directory only; default 1GiB): how much of the newest ingested media
stays in the page cache once on disk; older written pages are dropped from it (they stay on disk),
so that ingest reuses memory instead of growing the page cache by every byte it writes (README,
Performance, says what that growth cost on a VM). "all" leaves the page cache to the kernel.

--webhook URL (repeatable) POSTs each event as JSON, in order, retrying failures with backoff from
a bounded queue (a slow or dead webhook never slows ingest; what its queue cannot take is dropped
and counted); --webhook-secret (or KVS_WEBHOOK_SECRET) signs each body: X-Kvs-Signature:
sha256=<hex HMAC-SHA256>; --webhook-persisted adds fragment.persisted, one event per fragment.`

func addOpsFlags(f *pflag.FlagSet, o *opsOptions) {
	f.StringVar(&o.MetricsListen, "metrics-listen", "", "also serve /metrics, /healthz and /readyz, unsigned, on this host:port (for --auth sigv4)")
	f.IntVar(&o.MetricsMaxStreams, "metrics-max-streams", server.DefaultMetricsMaxStreams, "streams with their own ingest series in /metrics (the rest share stream=\"(other)\"; 0: none)")
	f.StringVar(&o.MaxDiskUsage, "max-disk-usage", "", "delete the oldest fragments first to keep the data directory within SIZE (500GB, 2TiB) or N% of its filesystem")
	f.StringVar(&o.WrittenCache, "written-cache", "", "keep this much of the newest ingested media in the page cache, drop older written pages (SIZE, default 1GiB; all: leave it to the kernel)")
	f.StringArrayVar(&o.Webhooks, "webhook", nil, "POST every event as JSON to this URL (repeatable)")
	f.StringVar(&o.WebhookSecret, "webhook-secret", "", "sign webhook bodies: X-Kvs-Signature: sha256=HMAC (env KVS_WEBHOOK_SECRET)")
	f.BoolVar(&o.WebhookPersisted, "webhook-persisted", false, "send fragment.persisted events (one per fragment) to the webhooks too")
	f.DurationVar(&o.GetMediaIdle, "get-media-idle-timeout", 0, "end a GetMedia response after it has waited this long for a new fragment (0: follow until the client leaves; the AWS CLI's get-media, which cannot ask to stop at the live edge, needs it under its 60 s read timeout)")
}

func (o opsOptions) validate(clustered, memory bool) error {
	if o.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(o.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: want host:port, e.g. 127.0.0.1:9464", o.MetricsListen)
		}
	}
	if o.GetMediaIdle < 0 {
		return errors.New("--get-media-idle-timeout cannot be negative")
	}
	if o.MetricsMaxStreams < 0 {
		return errors.New("--metrics-max-streams cannot be negative")
	}
	if o.MaxDiskUsage != "" {
		switch {
		case memory:
			return errors.New("--max-disk-usage caps the data directory: --memory has none")
		case clustered:
			return errors.New("--max-disk-usage caps a node's data directory, and cluster nodes have none: cap the bucket with the object store's lifecycle rules, and streams with the kvs:max-bytes tag (docs/cluster.md)")
		}
		if _, _, err := parseDiskLimit(o.MaxDiskUsage); err != nil {
			return fmt.Errorf("--max-disk-usage: %w", err)
		}
	}
	if o.WrittenCache != "" {
		if memory || clustered {
			return errors.New("--written-cache is about the data directory's files: --memory and cluster nodes have none")
		}
		if _, err := parseWrittenCache(o.WrittenCache); err != nil {
			return err
		}
	}
	for _, w := range o.Webhooks {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--webhook %q: want an http:// or https:// URL", w)
		}
	}
	// Only what was given is named: the secret may come from KVS_WEBHOOK_SECRET alone, set for
	// every kvs server of a host.
	switch {
	case len(o.Webhooks) > 0:
	case o.WebhookPersisted:
		return errors.New("--webhook-persisted needs --webhook URL")
	case o.WebhookSecret != "":
		return errors.New("a webhook secret (--webhook-secret, or KVS_WEBHOOK_SECRET in the environment) needs --webhook URL: give --webhook, or unset KVS_WEBHOOK_SECRET")
	}
	return nil
}

// parseWrittenCache reads --written-cache: a size, or "all" (store.FSOptions.WrittenCacheBytes
// negative: nothing dropped).
func parseWrittenCache(s string) (int64, error) {
	if strings.TrimSpace(s) == "all" {
		return -1, nil
	}
	n, err := store.ParseSize(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--written-cache %q: want a size above 0 (256MiB, 2GiB) or all", s)
	}
	return n, nil
}

// minDiskLimit is the smallest --max-disk-usage size (parseDiskLimit).
const minDiskLimit = 1 << 20

// parseDiskLimit reads --max-disk-usage: a size (store.ParseSize: 500GB, 2TiB, ...) or a
// percentage of the filesystem (90%).
func parseDiskLimit(s string) (bytes int64, percent float64, err error) {
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		percent, err = strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(percent > 0 && percent <= 100) { // NaN too
			return 0, 0, fmt.Errorf("%q: want a percentage above 0 and at most 100, such as 90%%", s)
		}
		return 0, percent, nil
	}
	if bytes, err = store.ParseSize(s); err != nil {
		return 0, 0, fmt.Errorf("%q: want a size such as 500GB or 2TiB, or a percentage of the filesystem such as 90%%", s)
	}
	// The quota counts the index too, and deletes whole segments of at least 64 KiB: below
	// 1 MiB it keeps next to nothing, each upload deleting the one before. Such a value is a
	// slip ("500", meant as 500GB, is 500 bytes), not a choice.
	if bytes < minDiskLimit {
		if _, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
			return 0, 0, fmt.Errorf("%q: a number with no unit is bytes; want a size such as 500GB or 2TiB, at least 1MiB", s)
		}
		return 0, 0, fmt.Errorf("%q: want at least 1MiB, such as 500GB or 2TiB", s)
	}
	return bytes, 0, nil
}

// starting answers while the store opens (and recovers after a crash): /healthz says the process
// is up, /readyz and every other request 503.
func starting(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Path == "/healthz" {
		_, _ = fmt.Fprintln(w, "ok")
		return
	}
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = fmt.Fprintln(w, "not ready: the store is opening (recovering after a crash can take a while)")
}
