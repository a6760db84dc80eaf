package server

import (
	"os"
	"testing"

	"github.com/openkvs/kvs/internal/testutil"
	"github.com/openkvs/kvs/internal/testutil/backends"
)

func TestMain(m *testing.M) {
	testutil.WaitingTests(16) // browsers, the AWS CLI, ffmpeg, stalled clients and their timeouts
	code := m.Run()
	stopBrowser()   // the console browser tests' Chromium
	backends.Stop() // the cluster tests' PostgreSQL and S3 server
	os.Exit(code)
}
