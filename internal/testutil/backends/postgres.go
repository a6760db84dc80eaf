package backends

import (
	"context"
	"crypto/rand"
	"fmt"
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
	// initdb refuses to run as root: run the server as the postgres user then.
	asOwner := func(*exec.Cmd) {}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(base, 0o755); err != nil {
			return "", err
		}
		if err := os.Chown(base, uid, gid); err != nil {
			return "", err
		}
		asOwner = func(c *exec.Cmd) { c.SysProcAttr = sysProcAttrAs(uint32(uid), uint32(gid)) }
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
	if err := run(initdb, "-D", dir, "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on", port, base)
	// The log file, not a pipe: the server outlives pg_ctl and would hold a pipe open.
	if err := run(pgCtl, "-D", dir, "-l", filepath.Join(base, "log"), "-o", opts, "-w", "start"); err != nil {
		return "", err
	}
	atExit(func() {
		_ = run(pgCtl, "-D", dir, "-m", "immediate", "stop")
		_ = os.RemoveAll(base)
	})
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", port), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
