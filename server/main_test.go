package server

import (
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
)

func TestMain(m *testing.M) {
	testutil.WaitingTests(16) // browsers, the AWS CLI, ffmpeg, stalled clients and their timeouts
	backends.Main(m)          // the cluster tests' PostgreSQL and S3 server
}
