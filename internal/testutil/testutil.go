// Package testutil holds what the tests of several kvs packages share: finding the real tools
// they talk to (ffmpeg, the AWS CLI, ...), and skipping slow tests under -short. It imports only
// the standard library, so that any package's tests may use it; the services of the cluster
// tests (PostgreSQL, an S3 server) are in testutil/backends.
//
// A test that needs a missing tool or service is skipped with a message naming it, unless
// KVS_REQUIRE_TOOLS=1 (as in CI, whose .ci/run installs everything), where it fails instead.
package testutil

import (
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// Required reports whether missing tools fail tests instead of skipping them (KVS_REQUIRE_TOOLS=1).
func Required() bool { return os.Getenv("KVS_REQUIRE_TOOLS") == "1" }

// NeedTool returns the path of the named executable (a name looked up in PATH, or a path).
// When it is missing the test is skipped, or fails under KVS_REQUIRE_TOOLS=1.
func NeedTool(t testing.TB, name string, alsoIn ...string) string {
	t.Helper()
	if p := FindTool(name, alsoIn...); p != "" {
		return p
	}
	Missing(t, name+" is not installed")
	return ""
}

// FindTool returns the path of the named executable, looked up in PATH and then in the
// directories matching the alsoIn globs (the newest match), or "".
func FindTool(name string, alsoIn ...string) string {
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

// Missing skips t, or fails it under KVS_REQUIRE_TOOLS=1, saying what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (KVS_REQUIRE_TOOLS=1: CI's .ci/run installs it)", what)
	}
	t.Skipf("%s; skipping", what)
}

// IsolateAWS keeps the developer's AWS and kvs configuration out of a test binary: it unsets the
// environment variables the AWS SDK takes credentials, profiles, regions and endpoints from (and
// KVS_ENDPOINT, KVS_REGION, KVS_LOG_LEVEL, KVS_CONFIG), and points the AWS config and credentials
// files at /dev/null; and it turns the EC2 instance-metadata source off, so that no test waits for a
// metadata service. kvs clients then fall back to their local dummy credentials. Call it from
// TestMain before m.Run: done once for the process instead of with t.Setenv in each test, it
// leaves the tests free to run in parallel (t.Setenv forbids t.Parallel).
func IsolateAWS() {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_KINESIS_VIDEO", "KVS_ENDPOINT", "KVS_REGION", "KVS_LOG_LEVEL", "KVS_CONFIG"} {
		os.Unsetenv(k)
	}
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// Slow skips t under `go test -short`: tests that drive real tools or browsers for seconds, or
// wait out timeouts that long. CI runs the full suite.
func Slow(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow test (real tools, a browser or timeouts for seconds): skipped with -short")
	}
}

// Tmpfs mounts a new tmpfs of the given size (mount's size= option, e.g. "32m") on a fresh
// directory and returns it; the test's cleanup unmounts it (after cleanups registered later,
// such as closing a store on it). It needs the mount program and the right to mount (root, or
// CAP_SYS_ADMIN): without them the test is skipped, saying so, whatever KVS_REQUIRE_TOOLS says,
// since no package installs that right.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): this test needs root or CAP_SYS_ADMIN; skipping", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// ReadOnly makes dir read-only for new opens by mounting a read-only bind mount of it over
// itself (files already open for writing stay writable, as they are on the mount below, which is
// why this works where remounting a filesystem that has files open for writing read-only is
// refused); the returned function, also run by the test's cleanup, unmounts it again. Without the
// right to mount, the test is skipped, saying so.
func ReadOnly(t testing.TB, dir string) (undo func()) {
	t.Helper()
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount %s here (%v: %s): this test needs root or CAP_SYS_ADMIN; skipping", dir, err, out)
	}
	mounted := true
	undo = func() {
		if !mounted {
			return
		}
		mounted = false
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	}
	t.Cleanup(undo)
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s read-only: %v: %s", dir, err, out)
	}
	return undo
}

// DirBytes is what the files under dir take: the sum of their sizes, as du --apparent-size
// counts them.
func DirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// WaitingTests raises the default of -test.parallel for a package whose tests spend most of
// their time waiting rather than computing: real-time sources (an RTSP camera sends at its frame
// rate, a test pattern for its --duration), subprocesses (ffmpeg, the AWS CLI, kvs server nodes)
// and outages held for seconds. Go's default runs GOMAXPROCS parallel tests at once (2 on the CI
// machine), so such tests queue behind each other's waits with the CPU idle. n of them run at
// once instead; a -parallel given on the command line still wins. Call it from TestMain, before
// m.Run.
func WaitingTests(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
