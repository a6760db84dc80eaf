package backends

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/openkvs/kvs/internal/testutil"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgres(t *testing.T) {
	t.Parallel()
	url := Postgres(t)
	out, err := psql(url, "CREATE TABLE x (a int); INSERT INTO x VALUES (7); SELECT current_schema(), a FROM x")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	other := Postgres(t)
	if out2, err := psql(other, "SELECT count(*) FROM x"); err == nil {
		t.Fatalf("a second schema sees the first one's table: %s", out2)
	}
	if !bytes.Contains(out, []byte("7")) {
		t.Fatalf("psql: %s", out)
	}
}

func TestS3(t *testing.T) {
	t.Parallel()
	b := S3(t)
	c := b.Client()
	ctx := t.Context()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.Bucket), Key: aws.String("a/b"), Body: bytes.NewReader([]byte("hello"))}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Bucket), Key: aws.String("a/b"), Range: aws.String("bytes=1-3")})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if string(body) != "ell" {
		t.Fatalf("ranged GET: %q", body)
	}
}

// psql runs one SQL statement with the psql client (a client of its own, to check the schemas Postgres makes).
func psql(url, sql string) ([]byte, error) {
	bin := testutil.FindTool("psql", pgBinGlob)
	if bin == "" {
		return nil, fmt.Errorf("psql not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, bin, url, "-v", "ON_ERROR_STOP=1", "-qc", sql).CombinedOutput()
}

// A cut Link refuses new connections and resets the open ones (a query on a connection opened
// before the cut fails); the server stays up for everyone else, and Restore brings the link back.
func TestLink(t *testing.T) {
	t.Parallel()
	direct := Postgres(t)
	url, link := Through(t, direct)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("through the link: %d, %v", n, err)
	}
	link.Cut(t)
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err == nil {
		t.Error("a connection opened before the cut still answers")
	}
	if c, err := pgx.Connect(ctx, url); err == nil {
		c.Close(context.Background())
		t.Error("a new connection through a cut link succeeded")
	} else if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("connecting through a cut link: %v, want connection refused", err)
	}
	if out, err := psql(direct, "SELECT 1"); err != nil {
		t.Errorf("the server itself stopped answering while the link was cut: %v\n%s", err, out)
	}
	link.Restore(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("after Restore: %v", err)
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after Restore: %d, %v", n, err)
	}
}

// A frozen Link passes nothing, without refusing or resetting anything: a query on an open
// connection and a new connection each wait until their context ends; Thaw lets them through
// again.
func TestLinkFreeze(t *testing.T) {
	t.Parallel()
	url, link := Through(t, Postgres(t))
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	link.Freeze(t)
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var n int
	if err := conn.QueryRow(short, "SELECT 1").Scan(&n); err == nil || short.Err() == nil {
		t.Errorf("a query through a frozen link: %d, %v; want it to wait until its context ends", n, err)
	}
	if c, err := pgx.Connect(short, url); err == nil {
		c.Close(context.Background())
		t.Error("a new connection through a frozen link succeeded")
	} else if short.Err() == nil {
		t.Errorf("connecting through a frozen link: %v, want a wait until the context ends", err)
	}
	link.Thaw(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("after Thaw: %v", err)
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after Thaw: %d, %v", n, err)
	}
}
