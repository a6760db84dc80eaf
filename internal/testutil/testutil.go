// Package testutil holds what the tests of several kvs packages share: finding the real tools
// they talk to (ffmpeg, the AWS CLI, ...) and starting the real services the cluster tests need
// (PostgreSQL, an S3 server), once per test binary.
//
// A test that needs a missing tool or service is skipped with a message naming it, unless
// KVS_REQUIRE_TOOLS=1 (as in CI, whose .ci/run installs everything), where it fails instead.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Required reports whether missing tools fail tests instead of skipping them (KVS_REQUIRE_TOOLS=1).
func Required() bool { return os.Getenv("KVS_REQUIRE_TOOLS") == "1" }

// NeedTool returns the path of the named executable (a name looked up in PATH, or a path).
// When it is missing the test is skipped, or fails under KVS_REQUIRE_TOOLS=1.
func NeedTool(t testing.TB, name string, alsoIn ...string) string {
	t.Helper()
	if p := findTool(name, alsoIn...); p != "" {
		return p
	}
	missing(t, name+" is not installed")
	return ""
}

func findTool(name string, alsoIn ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, glob := range alsoIn {
		matches, _ := filepath.Glob(filepath.Join(glob, name))
		for i := len(matches) - 1; i >= 0; i-- { // the newest version sorts last
			if st, err := os.Stat(matches[i]); err == nil && st.Mode()&0o111 != 0 {
				return matches[i]
			}
		}
	}
	return ""
}

// missing skips t, or fails it under KVS_REQUIRE_TOOLS=1, saying what is missing.
func missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (KVS_REQUIRE_TOOLS=1: CI's .ci/run installs it)", what)
	}
	t.Skipf("%s; skipping", what)
}

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
// services afterwards. Call it from TestMain: func TestMain(m *testing.M) { testutil.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	cleanupMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanupMu.Unlock()
	os.Exit(code)
}
