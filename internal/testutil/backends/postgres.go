package backends

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/internal/testutil"
)

// Where Debian's postgresql package puts its programs (not on PATH).
const pgBinGlob = "/usr/lib/postgresql/*/bin"

var (
	pgOnce sync.Once
	pgURL  string // postgres://postgres@127.0.0.1:PORT/postgres, or "" with pgErr
	pgErr  error
)

// Postgres returns the connection URL of a fresh, empty schema in a PostgreSQL server started
// for this test binary (initdb into a temporary directory, pg_ctl start on a free loopback port,
// as the postgres user when run as root). The URL sets search_path to the schema, so a store
// opened on it sees only this test's tables. The server stops at the end of Main.
func Postgres(t testing.TB) string {
	t.Helper()
	testutil.Slow(t) // a server to start, and tests of many seconds
	pgOnce.Do(func() { pgURL, pgErr = startPostgres() })
	if pgErr != nil {
		testutil.Missing(t, "PostgreSQL: "+pgErr.Error())
	}
	schema := "t_" + strings.ToLower(rand.Text()[:12])
	// Through pgx, not psql: a psql process per test schema was a few seconds of the suite's CPU.
	// The schema is not dropped: the server and its data go at the end of Main.
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err == nil {
		_, err = conn.Exec(t.Context(), "CREATE SCHEMA "+schema)
		conn.Close(context.Background())
	}
	if err != nil {
		t.Fatalf("create schema: %v", err)
	}
	return pgURL + "?options=-csearch_path%3D" + schema
}

func startPostgres() (string, error) {
	initdb := testutil.FindTool("initdb", pgBinGlob)
	pgCtl := testutil.FindTool("pg_ctl", pgBinGlob)
	if initdb == "" || pgCtl == "" {
		return "", fmt.Errorf("initdb and pg_ctl not found (apt-get install postgresql)")
	}
	base, err := os.MkdirTemp("", "kvs-pg-")
	if err != nil {
		return "", err
	}
	// initdb refuses to run as root: run the server as the postgres user then, in directories
	// it owns (giveOwner).
	asOwner := func(*exec.Cmd) {}
	giveOwner := func(string) error { return nil }
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		asOwner = func(c *exec.Cmd) { c.SysProcAttr = sysProcAttrAs(uint32(uid), uint32(gid)) }
		giveOwner = func(dir string) error {
			if err := os.Chmod(dir, 0o755); err != nil {
				return err
			}
			return os.Chown(dir, uid, gid)
		}
	}
	if err := giveOwner(base); err != nil {
		return "", err
	}
	dir := filepath.Join(base, "data")
	run := func(name string, args ...string) error {
		c := exec.Command(name, args...)
		asOwner(c)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return nil
	}
	initdbInto := func(data string) error { return run(initdb, append([]string{"-D", data}, initdbArgs...)...) }
	var port int
	start := func() error {
		var err error
		for range 3 { // a port another process binds first fails the start: another port
			if port, err = freePort(); err != nil {
				return err
			}
			opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on", port, base)
			// The log file, not a pipe: the server outlives pg_ctl and would hold a pipe open.
			if err = run(pgCtl, "-D", dir, "-l", filepath.Join(base, "log"), "-o", opts, "-w", "start"); err == nil {
				return nil
			}
		}
		return err
	}
	// A copy of the cluster initdb made for an earlier test binary, else initdb (and its result
	// kept for the next): initdb runs PostgreSQL in bootstrap mode, a copy only copies, and three
	// test binaries start a server each.
	tmpl := pgTemplate(initdb, giveOwner, initdbInto)
	if tmpl == "" || exec.Command("cp", "-a", tmpl, dir).Run() != nil || start() != nil {
		if tmpl != "" { // a template that does not start (damaged, or cleaned up in part): drop it
			_ = os.RemoveAll(tmpl)
			_ = os.RemoveAll(dir)
		}
		if err := initdbInto(dir); err != nil {
			return "", err
		}
		if err := start(); err != nil {
			return "", err
		}
	}
	atExit(func() {
		_ = run(pgCtl, "-D", dir, "-m", "immediate", "stop")
		_ = os.RemoveAll(base)
	})
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", port), nil
}

// initdbArgs are the tests' initdb options, after -D DIR. WAL segments of 1 MiB, not 16: the
// data directory a test binary copies is 23 MB instead of 39 (pg_wal holds one segment).
var initdbArgs = []string{"-A", "trust", "-U", "postgres", "--no-sync", "--wal-segsize=1"}

// pgTemplate returns a data directory that initdb made with initdbArgs, to copy (cp -a) for a
// server of this test binary, or "" if it has none and cannot make one. It sits in the temporary
// directory under a name of its initdb's version, made once (a new one is built aside and
// renamed into place: test binaries that start at once each build one, and one stays).
// giveOwner hands a directory to the user initdbInto runs initdb as.
func pgTemplate(initdb string, giveOwner, initdbInto func(dir string) error) string {
	v, err := exec.Command(initdb, "--version").Output()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(append(v, strings.Join(initdbArgs, " ")...))
	tmpl := filepath.Join(os.TempDir(), fmt.Sprintf("kvs-pg-template-%x", sum[:6]))
	if _, err := os.Stat(filepath.Join(tmpl, "PG_VERSION")); err == nil {
		return tmpl
	}
	aside, err := os.MkdirTemp("", "kvs-pg-template-new-")
	if err != nil {
		return ""
	}
	defer os.RemoveAll(aside)
	data := filepath.Join(aside, "data")
	if giveOwner(aside) != nil || initdbInto(data) != nil {
		return ""
	}
	if err := os.Rename(data, tmpl); err != nil {
		if _, err := os.Stat(filepath.Join(tmpl, "PG_VERSION")); err != nil {
			return "" // neither ours nor another binary's
		}
	}
	return tmpl
}

// freePort returns a loopback port that no socket holds, below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range; 32768 where it cannot be read). A port from that range, which a
// Listen on :0 returns, may be taken as the source port of another process's connection between
// its release here and the server's bind: CI saw PostgreSQL fail twice on one such port, "could
// not bind IPv4 address: Address already in use", and every cluster test of that binary with it.
func freePort() (int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	for range 100 {
		port := 10000 + mrand.IntN(low-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // held by a listener
		}
		l.Close()
		return port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
