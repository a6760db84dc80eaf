package cluster

import (
	"errors"

	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the Config fields; see Config.
const (
	DefaultFlushInterval   = 250 * time.Millisecond
	DefaultFlushBytes      = 8 << 20
	DefaultLeaseTTL        = 10 * time.Second
	DefaultUnavailableWait = 10 * time.Second
	// numberBlock is how many fragment numbers a writer reserves in one PostgreSQL update (as
	// the FS store's high-water mark): a new owner starts above every number any earlier owner
	// reserved, so numbers stay unique and increasing across owners, with gaps.
	numberBlock = 1000
)

// Config configures a Store. Index, Objects and NodeURL are required.
type Config struct {
	// Index is the PostgreSQL connection URL (postgres://USER@HOST:PORT/DB?...), where the stream
	// registry, the fragment index, the leases and the node list live. The server creates and
	// migrates its tables (kvs_*) itself. A node keeps up to 16 connections, or pool_max_conns
	// when the URL sets it (at least 2).
	Index string
	// Objects is where fragment bytes go: an S3 bucket and optional key prefix (ParseObjects).
	// Credentials come from the AWS SDK's default chain (environment, shared files, instance
	// role).
	Objects Objects
	// NodeURL is the URL other nodes and clients reach this node at (--advertise-url): what
	// GetDataEndpoint answers for the streams this node writes, and where other nodes relay to.
	NodeURL string
	// FlushInterval is how long a batch of fragments (of all the node's streams) collects before
	// it is written as one object, unless FlushBytes fill it first. 0 writes one object per
	// fragment. PERSISTED waits for the PUT and the index commit, so this is the floor of its
	// latency; see DefaultFlushInterval and docs/cluster.md for the measurements behind it.
	FlushInterval time.Duration
	// FlushBytes ends a batch once it holds this many bytes (default 8 MiB).
	FlushBytes int64
	// LeaseTTL is how long a stream's write lease lasts without renewal (default 10 s): the
	// longest a stream stays unwritable after its owner died. Leases are renewed every TTL/3.
	LeaseTTL time.Duration
	// UnavailableWait bounds how long an append, and each operation of a request, waits for
	// PostgreSQL or the object store before it fails with store.ErrUnavailable (default 10 s).
	UnavailableWait time.Duration
	// Log receives lease changes, retries and cleanup results (default: discard).
	Log *slog.Logger
	// Credentials for the object store; nil: the AWS SDK's default chain (environment, shared
	// config files, instance role).
	Credentials aws.CredentialsProvider
	// Metrics, when not nil, gets the node's cluster collectors (metrics.go): leases taken, lost
	// and held, batch PUT and commit latency, objects written and deleted, deletions by reason.
	Metrics prometheus.Registerer
}

// Objects names an S3-compatible bucket and a key prefix.
type Objects struct {
	Bucket    string
	Prefix    string // "" or ending in "/"
	Endpoint  string // "" for AWS S3; else the S3 API URL (MinIO, Ceph RGW, SeaweedFS, versitygw)
	Region    string
	PathStyle bool // bucket in the path, not the host name (most S3-compatible servers)
}

// ParseObjects parses s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true], the form of
// kvs server's --objects.
func ParseObjects(raw string) (Objects, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Objects{}, fmt.Errorf("objects URL %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Objects{}, fmt.Errorf("objects URL %q: want s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true", raw)
	}
	o := Objects{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Region: "us-east-1"}
	if o.Prefix != "" {
		o.Prefix += "/"
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "path_style":
		default:
			return Objects{}, fmt.Errorf("objects URL %q: unknown parameter %q (endpoint, region, path_style)", raw, k)
		}
	}
	if v := q.Get("endpoint"); v != "" {
		e, err := url.Parse(v)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return Objects{}, fmt.Errorf("objects URL %q: endpoint %q: want http(s)://host[:port]", raw, v)
		}
		o.Endpoint = strings.TrimSuffix(v, "/")
	}
	if v := q.Get("region"); v != "" {
		o.Region = v
	}
	if v := q.Get("path_style"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Objects{}, fmt.Errorf("objects URL %q: path_style=%q: want true or false", raw, v)
		}
		o.PathStyle = b
	}
	return o, nil
}

// String is the URL form ParseObjects reads (unescaped, for people).
func (o Objects) String() string {
	s := "s3://" + o.Bucket + "/" + o.Prefix + "?region=" + o.Region
	if o.Endpoint != "" {
		s += "&endpoint=" + o.Endpoint
	}
	if o.PathStyle {
		s += "&path_style=true"
	}
	return s
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	switch {
	case cfg.Index == "":
		return cfg, errors.New("cluster: Config.Index (the PostgreSQL URL) is required")
	case cfg.Objects.Bucket == "":
		return cfg, errors.New("cluster: Config.Objects (the S3 bucket) is required")
	case cfg.NodeURL == "":
		return cfg, errors.New("cluster: Config.NodeURL (this node's advertised URL) is required")
	}
	if cfg.FlushInterval < 0 {
		cfg.FlushInterval = 0
	}
	if cfg.FlushBytes <= 0 {
		cfg.FlushBytes = DefaultFlushBytes
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.UnavailableWait <= 0 {
		cfg.UnavailableWait = DefaultUnavailableWait
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
