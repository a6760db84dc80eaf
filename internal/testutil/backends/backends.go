// Package backends starts the real services the cluster tests need, PostgreSQL and an S3 server
// (versitygw), once per test binary, and hands each test a fresh schema or bucket. A package that
// uses it calls Main from its TestMain, which stops the services when its tests end. A missing
// service skips the test, or fails it under KVS_REQUIRE_TOOLS=1 (testutil.Missing).
package backends

import (
	"os"
	"sync"
	"testing"
)

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

// atExit registers fn to run when the test binary ends (Main).
func atExit(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, fn)
}

// Main runs the tests of a package that starts shared services (Postgres, S3) and stops those
// services afterwards. Call it from TestMain: func TestMain(m *testing.M) { backends.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the services started so far (for a TestMain that does more than Main).
func Stop() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}
