package backends

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Bucket is a fresh, empty bucket on the test binary's S3 server.
type S3Bucket struct {
	Endpoint  string // http://127.0.0.1:PORT
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
}

// URL is the bucket as kvs server's --objects takes it.
func (b S3Bucket) URL() string {
	return fmt.Sprintf("s3://%s?endpoint=%s&region=%s&path_style=true", b.Bucket, b.Endpoint, b.Region)
}

// Env is the environment that gives the AWS SDK's default chain the bucket's credentials.
func (b S3Bucket) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + b.AccessKey, "AWS_SECRET_ACCESS_KEY=" + b.SecretKey, "AWS_REGION=" + b.Region}
}

// Client returns an S3 client for the bucket's server.
func (b S3Bucket) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(b.Endpoint), Region: b.Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(b.AccessKey, b.SecretKey, ""),
	})
}

const (
	s3AccessKey = "kvstest"
	s3SecretKey = "kvstest-secret-key"
)

var (
	s3Once sync.Once
	s3Err  error
	s3Addr string // the server's host:port
)

// S3 returns a new bucket on an S3 server started for this test binary: versitygw (posix
// backend on a temporary directory, loopback only), found on PATH or in $GOPATH/bin
// (`go install github.com/versity/versitygw/cmd/versitygw@v1.8.0`). versitygw does not fsync,
// so it is no durability witness: only for tests.
func S3(t testing.TB) S3Bucket {
	t.Helper()
	testutil.Slow(t)
	s3Once.Do(func() { s3Err = startS3() })
	if s3Err != nil {
		testutil.Missing(t, "S3 server: "+s3Err.Error())
	}
	b := S3Bucket{Endpoint: "http://" + s3Addr, Bucket: "kvs-" + strings.ToLower(rand.Text()[:16]),
		Region: "us-east-1", AccessKey: s3AccessKey, SecretKey: s3SecretKey}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b.Bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", b.Bucket, err)
	}
	return b
}

// startS3 starts versitygw and waits until it accepts connections; it stops at the end of Main.
func startS3() error {
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	bin := testutil.FindTool("versitygw", filepath.Join(strings.TrimSpace(string(gopath)), "bin"))
	if bin == "" {
		return fmt.Errorf("versitygw not found (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	}
	dir, err := os.MkdirTemp("", "kvs-s3-")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", addr, "--access", s3AccessKey, "--secret", s3SecretKey, "posix", dir)
	log, err := os.Create(filepath.Join(os.TempDir(), "kvs-versitygw-"+strings.ReplaceAll(addr, ":", "-")+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	go func() { _ = cmd.Wait(); log.Close() }()
	atExit(func() {
		_ = cmd.Process.Kill()
		_ = os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			s3Addr = addr
			return nil
		}
	}
	return fmt.Errorf("versitygw did not listen on %s within 20 s (log: %s)", addr, log.Name())
}
