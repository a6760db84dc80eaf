package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBenchHelperProcess is not a test: run by TestBench as the embedded `kvs server` child
// (KVS_BENCH_HELPER=1), it runs kvs with the arguments after "--".
func TestBenchHelperProcess(t *testing.T) {
	if os.Getenv("KVS_BENCH_HELPER") != "1" {
		t.Skip("helper process for TestBench")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Args = append([]string{"kvs"}, args...)
	os.Exit(Main())
}

func TestBenchValidate(t *testing.T) {
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

// TestBench runs `kvs bench --embedded` for 3 streams and 3 s (the server is this test binary as a
// child process) and checks the JSON object's shape and that nothing failed. No timing assertions.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 5 s")
	}
	t.Setenv("KVS_BENCH_HELPER", "1")
	old := benchServerCommand
	benchServerCommand = func() ([]string, error) {
		return []string{os.Args[0], "-test.run=^TestBenchHelperProcess$", "--"}, nil
	}
	t.Cleanup(func() { benchServerCommand = old })
	var stdout, stderr bytes.Buffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	code := Run(t.Context(), env, []string{"bench", "--embedded", "--data-dir", t.TempDir(), "--streams", "3",
		"--bitrate", "1Mbps", "--fragment-duration", "1s", "--duration", "3s", "--output", "json"})
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
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
