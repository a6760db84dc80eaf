package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
	"github.com/openkvs/kvs/server/store"
	"github.com/openkvs/kvs/server/store/storetest"
)

func TestMain(m *testing.M) {
	testutil.WaitingTests(8) // leases that expire, a PostgreSQL stopped for seconds
	backends.Main(m)
}

// testConfig is a Config on a fresh PostgreSQL schema and S3 bucket.
func testConfig(t *testing.T) Config {
	t.Helper()
	pg := backends.Postgres(t)
	b := backends.S3(t)
	return Config{
		Index:         pg,
		Objects:       Objects{Bucket: b.Bucket, Endpoint: b.Endpoint, Region: b.Region, PathStyle: true},
		Credentials:   credentials.NewStaticCredentialsProvider(b.AccessKey, b.SecretKey, ""),
		NodeURL:       "http://127.0.0.1:1",
		FlushInterval: 2 * time.Millisecond,
	}
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStoreContract runs the store behaviour suite over PostgreSQL and versitygw.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
		cfg := testConfig(t)
		open := func(t *testing.T) store.Store { return openStore(t, cfg) }
		return open(t), open
	})
}

// The pool holds 16 connections unless the index URL sets pool_max_conns (which used to be raised
// to 16 whatever it said); under 2 is refused, as one connection LISTENs for the node's life.
func TestPoolMaxConns(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	open := func(cfg Config) *Store {
		s := openStore(t, cfg)
		t.Cleanup(func() { s.Close() })
		return s
	}
	if got := open(cfg).pool.Config().MaxConns; got != defaultMaxConns {
		t.Errorf("default pool: %d connections, want %d", got, defaultMaxConns)
	}
	three := cfg
	three.Index += "&pool_max_conns=3"
	if got := open(three).pool.Config().MaxConns; got != 3 {
		t.Errorf("pool_max_conns=3: %d connections", got)
	}
	one := cfg
	one.Index += "&pool_max_conns=1"
	if s, err := Open(t.Context(), one); err == nil || !strings.Contains(err.Error(), "at least 2") {
		if s != nil {
			s.Close()
		}
		t.Errorf("pool_max_conns=1: %v, want an error saying at least 2", err)
	}
}
