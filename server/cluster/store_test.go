package cluster

import (
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
