package cmd

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// With no --region, KVS_REGION or config-file region, the AWS environment's region (AWS_REGION,
// as the AWS CLI and SDKs read it) should sign the requests, not a hard-coded us-east-1.
func TestRegionFromAWSEnvironment(t *testing.T) {
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	var mu sync.Mutex
	var auth string
	url, _ := e2eServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			auth = r.Header.Get("Authorization")
			mu.Unlock()
			h.ServeHTTP(w, r)
		})
	})
	mustRun(t, url, nil, "list-streams")
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(auth, "/eu-west-1/kinesisvideo/aws4_request") {
		t.Errorf("AWS_REGION=eu-west-1, but the request was signed with %q", auth)
	}
}
