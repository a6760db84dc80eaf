package cmd

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/testutil"
)

// TestServeTLSAndAuth runs `kvs server --tls-cert --tls-key --auth sigv4 --credentials-file` as a
// process: it prints and advertises an https endpoint; a client trusting the certificate and
// holding a listed key creates a stream, uploads and reads media; a wrong key is refused with
// NotAuthorizedException; plain HTTP and untrusting clients fail; the AWS CLI works with
// --ca-bundle and the right key.
func TestServeTLSAndAuth(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	dir := t.TempDir()
	certFile, keyFile, pool := testutil.SelfSigned(t, dir)
	credFile := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credFile, []byte("[default]\naws_access_key_id = AKIDTLS\naws_secret_access_key = tls-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKVS(t, "--memory", "--tls-cert", certFile, "--tls-key", keyFile, "--auth", "sigv4", "--credentials-file", credFile)
	if !strings.HasPrefix(p.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("endpoint %q, want https", p.Endpoint)
	}
	if l := p.stderr.String(); !strings.Contains(l, "auth=sigv4 keys=1 tls=true") {
		t.Errorf("start log:\n%s", l)
	}
	ctx := t.Context()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}

	c, err := client.New(ctx, client.Config{Endpoint: p.Endpoint, Region: "us-east-1", HTTPClient: hc,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTLS", "tls-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Control.CreateStream(ctx, &kinesisvideo.CreateStreamInput{StreamName: aws.String("tls"), DataRetentionInHours: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	ep, err := c.DataEndpoint(ctx, "tls", types.APINamePutMedia)
	if err != nil || ep != p.Endpoint {
		t.Fatalf("DataEndpoint %q, %v; want %s", ep, err, p.Endpoint)
	}
	prod, err := client.NewProducer(c, client.ProducerConfig{Stream: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := prod.Send(ctx, crashFragment(i, 1_700_000_000_000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := prod.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := client.NewConsumer(c, client.ConsumerConfig{Stream: "tls", Start: client.StartSelector{Type: client.StartEarliest}, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		f, err := cons.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Frames) != 3 {
			t.Fatalf("fragment with %d frames", len(f.Frames))
		}
		n++
	}
	cons.Close()
	if n != 3 {
		t.Fatalf("read %d fragments over TLS, want 3", n)
	}

	// A wrong key, plain HTTP, and a client that does not trust the certificate all fail.
	bad, err := client.New(ctx, client.Config{Endpoint: p.Endpoint, Region: "us-east-1", HTTPClient: hc,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTLS", "wrong", "")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: aws.String("tls")})
	var na *types.NotAuthorizedException
	if !errors.As(err, &na) {
		t.Fatalf("wrong secret: %v", err)
	}
	resp, err := http.Post("http://"+strings.TrimPrefix(p.Endpoint, "https://")+"/listStreams", "application/json", strings.NewReader("{}"))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP got a 200 from the TLS port")
		}
	}
	if _, err := http.Post(p.Endpoint+"/listStreams", "application/json", strings.NewReader("{}")); err == nil {
		t.Fatal("a client without the CA connected")
	}

	// The AWS CLI with --ca-bundle.
	cli := testutil.NewAWSCLI(t, p.Endpoint)
	cli.AccessKey, cli.SecretKey = "AKIDTLS", "tls-secret"
	var desc struct{ StreamInfo struct{ Status string } }
	cli.OK(&desc, "--ca-bundle", certFile, "kinesisvideo", "describe-stream", "--stream-name", "tls")
	if desc.StreamInfo.Status != "ACTIVE" {
		t.Fatalf("aws describe-stream over TLS: %+v", desc)
	}
	cli.SecretKey = "wrong"
	cli.Fails("NotAuthorizedException", "--ca-bundle", certFile, "kinesis-video-archived-media", "list-fragments", "--stream-name", "tls")

	// kvs bench writes PutMedia on its own TLS connections: they trust AWS_CA_BUNDLE as the
	// control-plane calls do (they used the system's roots and failed on this certificate).
	bench := exec.CommandContext(ctx, kvsBinary(t), "--endpoint", p.Endpoint, "bench", "--streams", "2", "--bitrate", "1Mbps",
		"--fragment-duration", "1s", "--duration", "2s", "--output", "json")
	bench.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "AWS_CA_BUNDLE=" + certFile,
		"AWS_ACCESS_KEY_ID=AKIDTLS", "AWS_SECRET_ACCESS_KEY=tls-secret", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	var benchErr strings.Builder
	bench.Stderr = &benchErr
	out, err := bench.Output()
	if err != nil {
		t.Fatalf("kvs bench over TLS: %v\n%s", err, benchErr.String())
	}
	var res struct{ Streams, Fragments, Delivered, Errors int }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("kvs bench output %q: %v", out, err)
	}
	if res.Streams != 2 || res.Fragments != 4 || res.Delivered != 4 || res.Errors != 0 {
		t.Fatalf("kvs bench over TLS: %+v, want 2 streams, 4 fragments stored and delivered, 0 errors; stderr:\n%s", res, benchErr.String())
	}
}
