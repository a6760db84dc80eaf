package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// The S3 client of --objects goes where --objects says, or to an S3-only setting
// (AWS_ENDPOINT_URL_S3, the profile's services section for s3); never to AWS_ENDPOINT_URL or the
// profile's endpoint_url, which a shell that points the AWS CLI and kvs at a kvs server sets for
// Kinesis Video: S3 requests then went to kvs itself. (t.Setenv: not parallel.)
func TestS3ClientIgnoresGlobalEndpoint(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(cfgFile, []byte("[profile p]\nendpoint_url = http://127.0.0.1:4567\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		objects Objects
		want    string
	}{
		{"AWS_ENDPOINT_URL", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:4567"}, Objects{Bucket: "b", Region: "us-east-1"}, ""},
		{"profile endpoint_url", map[string]string{"AWS_CONFIG_FILE": cfgFile, "AWS_PROFILE": "p"}, Objects{Bucket: "b", Region: "us-east-1"}, ""},
		{"AWS_ENDPOINT_URL_S3", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:4567", "AWS_ENDPOINT_URL_S3": "http://s3.local:9000"},
			Objects{Bucket: "b", Region: "us-east-1"}, "http://s3.local:9000"},
		{"--objects endpoint", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:4567"},
			Objects{Bucket: "b", Region: "us-east-1", Endpoint: "http://minio:9000"}, "http://minio:9000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := newS3Client(t.Context(), tc.objects, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := aws.ToString(c.Options().BaseEndpoint); got != tc.want {
				t.Errorf("S3 endpoint %q, want %q", got, tc.want)
			}
		})
	}
}
