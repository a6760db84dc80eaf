package cmd

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/openkvs/kvs/internal/testutil"
)

func TestBenchValidate(t *testing.T) {
	t.Parallel()
	ok := func() benchOptions {
		return benchOptions{Streams: 3, Bitrate: "2Mbps", FragmentDuration: time.Second, Duration: 3 * time.Second,
			FPS: 30, Output: "text"}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*benchOptions)
		error string
	}{
		{"ok", func(*benchOptions) {}, ""},
		{"embedded memory", func(o *benchOptions) { o.Embedded, o.Memory = true, true }, ""},
		{"bad bitrate", func(o *benchOptions) { o.Bitrate = "fast" }, "--bitrate"},
		{"no streams", func(o *benchOptions) { o.Streams = 0 }, "streams"},
		{"short duration", func(o *benchOptions) { o.Duration = 500 * time.Millisecond }, "duration"},
		{"long fragment", func(o *benchOptions) { o.FragmentDuration = time.Minute }, "fragment duration"},
		{"bad output", func(o *benchOptions) { o.Output = "table" }, "--output"},
		{"memory without embedded", func(o *benchOptions) { o.Memory = true }, "--embedded"},
		{"data dir without embedded", func(o *benchOptions) { o.DataDir = "/tmp" }, "--embedded"},
		{"pid with embedded", func(o *benchOptions) { o.Embedded, o.ServerPID = true, 1 }, "--server-pid"},
		{"warmup", func(o *benchOptions) { o.Warmup = time.Second }, ""},
		{"warmup as long as the run", func(o *benchOptions) { o.Warmup = 3 * time.Second }, "--warmup"},
		{"negative warmup", func(o *benchOptions) { o.Warmup = -time.Second }, "--warmup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok()
			tc.edit(&o)
			err := o.validate()
			if tc.error == "" && err != nil || tc.error != "" && (err == nil || !strings.Contains(err.Error(), tc.error)) {
				t.Errorf("validate() = %v, want error containing %q", err, tc.error)
			}
		})
	}
}

// TestBench runs `kvs bench --embedded` (the built binary, which starts itself as the server) for
// 3 streams and 3 s and checks the JSON object's shape and that nothing failed. No timing
// assertions.
func TestBench(t *testing.T) {
	t.Parallel()
	testutil.Slow(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), kvsBinary(t), "bench", "--embedded", "--data-dir", t.TempDir(), "--streams", "3",
		"--bitrate", "1Mbps", "--fragment-duration", "1s", "--duration", "3s", "--output", "json")
	home := t.TempDir()
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "XDG_DATA_HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(&stdout)
	var got map[string]any
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v in %q", err, stdout.String())
	}
	if dec.More() {
		t.Error("more than one JSON value")
	}
	for _, k := range []string{"streams", "duration_s", "fragments", "bytes", "errors", "ingest_mbps",
		"persisted_ack_ms", "delivery_ms", "peak_rss_mb"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %q in %v", k, got)
		}
	}
	for _, k := range []string{"persisted_ack_ms", "delivery_ms"} {
		m, _ := got[k].(map[string]any)
		for _, q := range []string{"p50", "p99", "max"} {
			if _, ok := m[q].(float64); !ok {
				t.Errorf("%s.%s missing in %v", k, q, got[k])
			}
		}
	}
	if got["streams"] != 3.0 || got["errors"] != 0.0 || got["fragments"] != 9.0 {
		t.Errorf("streams %v, errors %v (%v), fragments %v; want 3, 0, 9; stderr:\n%s",
			got["streams"], got["errors"], got["errors_by_kind"], got["fragments"], stderr.String())
	}
	if rss, ok := got["peak_rss_mb"].(float64); !ok || rss <= 0 {
		t.Errorf("peak_rss_mb = %v", got["peak_rss_mb"])
	}
	// The server's CPU from its /metrics: some, and per GB of the ~1 MB ingested, a lot more.
	cpu, _ := got["server_cpu_s"].(float64)
	perGB, _ := got["server_cpu_s_per_gb"].(float64)
	if cpu <= 0 || perGB <= cpu {
		t.Errorf("server_cpu_s = %v, server_cpu_s_per_gb = %v; want both set, per GB above the total; stderr:\n%s",
			got["server_cpu_s"], got["server_cpu_s_per_gb"], stderr.String())
	}
	// The steady state: some of the run, and the server's CPU over it.
	steady, _ := got["steady_s"].(float64)
	cores, _ := got["server_cores"].(float64)
	if steady <= 0 || steady > got["duration_s"].(float64)+1 || cores <= 0 {
		t.Errorf("steady_s = %v, server_cores = %v; want a part of the %v s run and some CPU; stderr:\n%s",
			got["steady_s"], got["server_cores"], got["duration_s"], stderr.String())
	}
	if s, _ := got["server"].(string); !strings.Contains(s, "FS store") {
		t.Errorf("server = %q", s)
	}
	if secs, _ := got["by_second"].([]any); len(secs) < 2 {
		t.Errorf("by_second = %v", got["by_second"])
	}
	if c, _ := got["connect_ms"].(map[string]any); c["max"] == nil {
		t.Errorf("connect_ms = %v", got["connect_ms"])
	}
}
