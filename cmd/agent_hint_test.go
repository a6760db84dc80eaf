package cmd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testcam"
	"github.com/openkvs/kvs/internal/testutil"
)

// A camera whose stream does not exist (no create: true, or a typo in stream-name) is retried
// for ever; its log line says what to do in the config file's words. Before, it said only
// "put-media garage: ResourceNotFoundException: The requested stream is not found or not active."
// every time, and the --create of put-media's hint is not a key an agent user writes.
func TestAgentMissingStreamSaysWhatToDo(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	cam := testcam.StartTest(t, testcam.Config{}, testcam.PathConfig{Clips: []string{testClip("h264.mkv")}})
	url, _ := e2eServer(t, nil)
	cfg := writeAgentConfig(t, url, fmt.Sprintf("name: garage\nsource: %s\nstream-name: garage\nspool-dir: %s", cam.URL("cam"), t.TempDir()))
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_, _, stderr := kvsRun(ctx, t, url, nil, "agent", "--config", cfg)
	if !strings.Contains(stderr, "ResourceNotFoundException") {
		t.Fatalf("the agent did not fail on the missing stream:\n%s", stderr)
	}
	for _, want := range []string{"create: true", "stream-name"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log does not say %q:\n%s", want, stderr)
		}
	}
}
