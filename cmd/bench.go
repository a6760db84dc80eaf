package cmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/bench"
)

type benchOptions struct {
	Streams          int
	Bitrate          string
	FragmentDuration time.Duration
	Duration         time.Duration
	Warmup           time.Duration
	FPS              int
	KeyframeRatio    float64
	NoConsumers      bool
	Embedded         bool
	Memory           bool
	DataDir          string
	ServerPID        int
	Output           string
	KeepStreams      bool
}

// bitrate is --bitrate in bits per second (checked by validate).
func (o benchOptions) bitrate() int64 {
	b, _ := bench.ParseBitrate(o.Bitrate)
	return b
}

func (o benchOptions) validate() error {
	if _, err := bench.ParseBitrate(o.Bitrate); err != nil {
		return fmt.Errorf("--bitrate: %w", err)
	}
	switch {
	case o.Output != outputText && o.Output != outputJSON:
		return fmt.Errorf("--output %q: want text or json", o.Output)
	case o.Memory && !o.Embedded:
		return errors.New("--memory is for the embedded server: add --embedded")
	case o.DataDir != "" && !o.Embedded:
		return errors.New("--data-dir is for the embedded server: add --embedded")
	case o.DataDir != "" && o.Memory:
		return errors.New("--memory keeps nothing on disk: leave out --data-dir")
	case o.Warmup < 0 || o.Warmup >= o.Duration:
		return fmt.Errorf("--warmup %v: want 0 or more and less than --duration %v", o.Warmup, o.Duration)
	case o.ServerPID != 0 && o.Embedded:
		return errors.New("--server-pid is for an external server: the embedded one is measured already")
	}
	return bench.Config{Client: &client.Client{}, Streams: o.Streams, Bitrate: o.bitrate(), FragmentDuration: o.FragmentDuration,
		Duration: o.Duration, FPS: o.FPS}.Validate()
}

func newBenchCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runBench, &cobra.Command{
		Use:   "bench [--streams N] [--bitrate R] [--fragment-duration D] [--duration T] [--embedded | --endpoint URL]",
		Short: "Measure a kvs server under N real-time camera streams",
		Long: `Drive N concurrent real-time PutMedia streams of synthetic H.264-like video (30 fps, one keyframe
per fragment, keyframe ≈ 9× a delta frame, each fragment = D seconds at R bit/s) with one live GetMedia
(NOW) consumer per stream, and report:

  persisted ack latency  the last byte of a fragment written → its PERSISTED ack read
  delivery latency       the last byte of a fragment written → the consumer has read its whole chunk
  errors                 ERROR acks, failed connections, fragments not persisted or not delivered,
                         delivered chunks whose fragment number tag or frame bytes are not the
                         fragment's own, or of no fragment sent, or repeated (each chunk is
                         checked against the acks and what was sent)
  ingest                 persisted media bits per second over the run
  peak RSS               the server's VmHWM (embedded server, or --server-pid on this machine)
  server CPU             the CPU seconds the server (every node of a cluster) used during the run,
                         from process_cpu_seconds_total in its /metrics, and per GB ingested
  server cores           the server's CPU seconds per second of the steady state, from when every
                         producer is sending (and --warmup has passed) to the last fragment sent:
                         what the load costs, without creating and connecting the streams before
                         it or the drain and deletions after it

--embedded starts "kvs server" as a child process with a fresh data directory on disk (a temporary
directory, or one made under --data-dir), so every PERSISTED ack waited for a real fdatasync;
--memory uses the memory store instead. Without --embedded the streams are created on --endpoint and
deleted at the end. An --endpoint of several URLs separated by commas is a kvs cluster: stream i is
put through node i and read through node i+1 (round robin), so delivery crosses nodes. The
consumers and the producers' PutMedia connections are opened first (as cameras are connected
before they stream; connect_ms reports the producers' set-up), then the producers start spread
over one fragment duration, as independent cameras are.

Output is a human summary, or with --output json exactly one JSON object: streams, duration_s,
fragments, bytes, errors, ingest_mbps (megabits/s), persisted_ack_ms and delivery_ms (p50, p99, max),
peak_rss_mb (null when unknown), server_cpu_s, server_cpu_s_per_gb, server_cores and steady_s
(the steady state's length; these four null when the server's /metrics cannot be read), plus
server, sent, delivered, errors_by_kind, load_avg, warmup_s, connect_ms and by_second (fragments
and p99 latencies per second of the run, where a tail comes from). --warmup D leaves the
fragments sent in the first D out of the latency figures.`,
	})
	f := c.Flags()
	f.IntVar(&o.Streams, "streams", 10, "number of concurrent streams (one producer and one consumer each)")
	f.StringVar(&o.Bitrate, "bitrate", "2Mbps", "media rate per stream, e.g. 2Mbps, 500kbps")
	f.DurationVar(&o.FragmentDuration, "fragment-duration", time.Second, "fragment length (keyframe interval)")
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "how long each producer streams")
	f.DurationVar(&o.Warmup, "warmup", 0, "leave fragments sent in the first part of the run out of the latency figures (they still count for errors)")
	f.IntVar(&o.FPS, "fps", bench.DefaultFPS, "frames per second")
	f.Float64Var(&o.KeyframeRatio, "keyframe-ratio", bench.DefaultKeyframeRatio, "keyframe size over delta frame size")
	f.BoolVar(&o.NoConsumers, "no-consumers", false, "ingest only: no GetMedia consumers")
	f.BoolVar(&o.Embedded, "embedded", false, "start a kvs server child process with a temporary data directory")
	f.BoolVar(&o.Memory, "memory", false, "embedded server with the memory store (no disk, no fsync)")
	f.StringVar(&o.DataDir, "data-dir", "", "embedded server: make its temporary data directory under this one (default $TMPDIR)")
	f.IntVar(&o.ServerPID, "server-pid", 0, "external server's process id on this machine, to report its peak RSS")
	f.StringVar(&o.Output, "output", outputText, "output format: text or json")
	f.BoolVar(&o.KeepStreams, "keep-streams", false, "external server: do not delete the streams at the end")
	return c
}

// benchOutput is the --output json object.
type benchOutput struct {
	Streams      int            `json:"streams"`
	DurationS    float64        `json:"duration_s"`
	Fragments    int            `json:"fragments"`
	Bytes        int64          `json:"bytes"`
	Errors       int            `json:"errors"`
	IngestMbps   float64        `json:"ingest_mbps"`
	PersistedAck bench.Latency  `json:"persisted_ack_ms"`
	Delivery     bench.Latency  `json:"delivery_ms"`
	PeakRSSMB    *float64       `json:"peak_rss_mb"`
	ServerCPUS   *float64       `json:"server_cpu_s"`
	ServerCores  *float64       `json:"server_cores"`
	SteadyS      *float64       `json:"steady_s"`
	CPUSPerGB    *float64       `json:"server_cpu_s_per_gb"`
	Server       string         `json:"server"`
	Sent         int            `json:"sent"`
	Delivered    int            `json:"delivered"`
	ErrorsByKind map[string]int `json:"errors_by_kind"`
	LoadAvg      string         `json:"load_avg"`
	WarmupS      float64        `json:"warmup_s"`
	Connect      bench.Latency  `json:"connect_ms"`
	BySecond     []bench.Second `json:"by_second"`
}

func runBench(ctx context.Context, env *Env, o benchOptions) error {
	logf := func(format string, a ...any) { fmt.Fprintf(env.Stderr, "kvs bench: "+format+"\n", a...) }
	endpoint := env.Config.GetString("endpoint")
	server := "external " + endpoint
	pid := o.ServerPID
	if o.DataDir != "" {
		if fi, err := os.Stat(o.DataDir); err != nil || !fi.IsDir() {
			if err == nil {
				return usageErrorf("--data-dir %s is not a directory", o.DataDir)
			}
			return usageErrorf("--data-dir %s: %v", o.DataDir, pathErr(err))
		}
	}
	if o.Embedded {
		srv, err := startBenchServer(ctx, env, o)
		if err != nil {
			return err
		}
		defer srv.stop(logf)
		endpoint, pid = srv.url, srv.cmd.Process.Pid
		if o.Memory {
			server = fmt.Sprintf("embedded kvs server, pid %d, memory store (no fsync)", pid)
		} else {
			server = fmt.Sprintf("embedded kvs server, pid %d, FS store in %s (fdatasync on every append)", pid, srv.dir)
		}
	}
	logf("server: %s", server)
	cl, err := newClientAt(ctx, env, endpoint)
	if err != nil {
		return err
	}
	var nodes []string
	if parts := strings.Split(endpoint, ","); len(parts) > 1 {
		for _, p := range parts {
			nodes = append(nodes, strings.TrimSuffix(strings.TrimSpace(p), "/"))
		}
		logf("cluster of %d nodes: stream i is put through node i and read through node i+1", len(nodes))
	}
	servers := nodes
	if servers == nil {
		servers = []string{strings.TrimSuffix(endpoint, "/")}
	}
	cpu0, cpuErr := serverCPU(ctx, cl, servers)
	// The server's CPU over the steady state (bench.Config.Window): a sample at each end.
	type cpuSample struct {
		at  time.Time
		cpu float64
		err error
	}
	var steady [2]cpuSample
	window := func(end bool) {
		c, err := serverCPU(ctx, cl, servers)
		i := 0
		if end {
			i = 1
		}
		steady[i] = cpuSample{time.Now(), c, err}
	}
	res, err := bench.Run(ctx, bench.Config{
		Client: cl, Nodes: nodes, Streams: o.Streams, Bitrate: o.bitrate(), FragmentDuration: o.FragmentDuration,
		Duration: o.Duration, Warmup: o.Warmup, FPS: o.FPS, KeyframeRatio: o.KeyframeRatio, NoConsumers: o.NoConsumers,
		DeleteStreams: !o.Embedded && !o.KeepStreams, Log: logf, Window: window,
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out := benchOutput{
		Streams: res.Streams, DurationS: round3(res.Duration.Seconds()), Fragments: res.Fragments, Bytes: res.Bytes,
		Errors: res.Errors, IngestMbps: round3(res.IngestMbps()), PersistedAck: res.PersistedAck, Delivery: res.Delivery,
		Server: server, Sent: res.Sent, Delivered: res.Delivered, ErrorsByKind: res.ErrorsByKind, LoadAvg: loadAverage(),
		WarmupS: o.Warmup.Seconds(), Connect: res.Connect, BySecond: res.BySecond,
	}
	if cpuErr == nil {
		var cpu1 float64
		if cpu1, cpuErr = serverCPU(ctx, cl, servers); cpuErr == nil {
			used := round3(cpu1 - cpu0)
			out.ServerCPUS = &used
			if res.Bytes > 0 {
				perGB := round3(used / (float64(res.Bytes) / 1e9))
				out.CPUSPerGB = &perGB
			}
		}
	}
	if cpuErr != nil {
		logf("server CPU: %v", cpuErr)
	} else if a, z := steady[0], steady[1]; !a.at.IsZero() && !z.at.IsZero() && a.err == nil && z.err == nil {
		span := z.at.Sub(a.at).Seconds()
		cores, secs := round3((z.cpu-a.cpu)/span), round3(span)
		out.ServerCores, out.SteadyS = &cores, &secs
	}
	if pid != 0 {
		if kb, err := peakRSS(pid); err == nil {
			mb := round3(float64(kb) / 1024)
			out.PeakRSSMB = &mb
		} else {
			logf("peak RSS of pid %d: %v", pid, err)
		}
	}
	for _, e := range res.FirstErrors {
		logf("error: %s", e)
	}
	if o.Output == outputJSON {
		return writeJSON(env.Stdout, out)
	}
	return writeBenchText(env.Stdout, o, out, res)
}

func writeBenchText(w io.Writer, o benchOptions, out benchOutput, res bench.Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "kvs bench: %d streams × %s, %v fragments, %d fps (keyframe ≈ %g× delta), %v\n",
		o.Streams, bench.FormatBitrate(o.bitrate()), o.FragmentDuration, o.FPS, o.KeyframeRatio, o.Duration)
	fmt.Fprintf(&b, "server:          %s\n", out.Server)
	fmt.Fprintf(&b, "fragments:       %d sent, %d persisted", res.Sent, res.Fragments)
	if !o.NoConsumers {
		fmt.Fprintf(&b, ", %d delivered", res.Delivered)
	}
	fmt.Fprintf(&b, "\nerrors:          %d", res.Errors)
	if len(res.ErrorsByKind) > 0 {
		fmt.Fprintf(&b, " %v", res.ErrorsByKind)
	}
	fmt.Fprintf(&b, "\ningest:          %.1f Mbit/s (%.1f MB/s) over %.1f s\n", out.IngestMbps, out.IngestMbps/8, out.DurationS)
	lat := func(name string, l bench.Latency) {
		fmt.Fprintf(&b, "%-16s p50 %.1f ms   p99 %.1f ms   max %.1f ms\n", name+":", l.P50, l.P99, l.Max)
	}
	if o.Warmup > 0 {
		fmt.Fprintf(&b, "latencies:       of the fragments sent after the first %v (warm-up)\n", o.Warmup)
	}
	lat("persisted ack", res.PersistedAck)
	if !o.NoConsumers {
		lat("delivery", res.Delivery)
	}
	if out.PeakRSSMB != nil {
		fmt.Fprintf(&b, "server peak RSS: %.1f MB (%.2f MB per stream)\n", *out.PeakRSSMB, *out.PeakRSSMB/float64(o.Streams))
	}
	if out.ServerCPUS != nil {
		fmt.Fprintf(&b, "server CPU:      %.2f s", *out.ServerCPUS)
		if out.CPUSPerGB != nil {
			fmt.Fprintf(&b, " (%.2f s per GB ingested)", *out.CPUSPerGB)
		}
		b.WriteString("\n")
		if out.ServerCores != nil {
			fmt.Fprintf(&b, "server cores:    %.2f while every stream was sending (%.1f s)\n", *out.ServerCores, *out.SteadyS)
		}
	}
	if len(res.BySecond) > 1 {
		worstAck, worstDel := res.BySecond[0], res.BySecond[0]
		for _, sec := range res.BySecond {
			if sec.PersistedP99 > worstAck.PersistedP99 {
				worstAck = sec
			}
			if sec.DeliveryP99 > worstDel.DeliveryP99 {
				worstDel = sec
			}
		}
		fmt.Fprintf(&b, "worst second:    persisted ack p99 %.1f ms (second %d)", worstAck.PersistedP99, worstAck.Second)
		if !o.NoConsumers {
			fmt.Fprintf(&b, ", delivery p99 %.1f ms (second %d)", worstDel.DeliveryP99, worstDel.Second)
		}
		b.WriteString("\n")
	}
	lat("connect", res.Connect)
	fmt.Fprintf(&b, "producer lag:    %v at most behind real time\n", res.ProducerLag.Round(time.Millisecond))
	fmt.Fprintf(&b, "load average:    %s\n", out.LoadAvg)
	_, err := io.WriteString(w, b.String())
	return err
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

// loadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg ("" elsewhere).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// peakRSS returns VmHWM of a process, in KiB, from /proc/PID/status.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM")
}

type benchServer struct {
	cmd    *exec.Cmd
	url    string
	dir    string
	waited chan error
}

// startBenchServer runs `kvs server --listen 127.0.0.1:0` with a fresh data directory and waits
// for the URL it prints.
func startBenchServer(ctx context.Context, env *Env, o benchOptions) (*benchServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	args := []string{"server", "--listen", "127.0.0.1:0", "--log-level", "warn"}
	s := &benchServer{waited: make(chan error, 1)}
	if o.Memory {
		args = append(args, "--memory")
	} else {
		if s.dir, err = os.MkdirTemp(o.DataDir, "kvs-bench-"); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		args = append(args, "--data-dir", s.dir)
	}
	s.cmd = exec.Command(exe, args...) //nolint:gosec // our own binary
	s.cmd.Stderr = env.Stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := s.cmd.Start(); err != nil {
		s.cleanup()
		return nil, fmt.Errorf("bench: start server: %w", err)
	}
	go func() { s.waited <- s.cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case u, ok := <-line:
		if ok && strings.HasPrefix(u, "http://") {
			s.url = u
			return s, nil
		}
		err = errors.New("bench: the server printed no URL")
	case <-time.After(30 * time.Second):
		err = errors.New("bench: the server did not start within 30 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.stop(func(string, ...any) {})
	return nil, err
}

// stop ends the server with SIGINT (graceful), then SIGKILL after 15 s, and removes its data.
// Where a process cannot be sent SIGINT (Windows), it is killed at once: its data is temporary.
func (s *benchServer) stop(logf func(string, ...any)) {
	grace := 15 * time.Second
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
		grace = 0
	}
	select {
	case <-s.waited:
	case <-time.After(grace):
		if grace > 0 {
			logf("server did not stop within 15 s: killing it")
		}
		_ = s.cmd.Process.Kill()
		<-s.waited
	}
	s.cleanup()
}

func (s *benchServer) cleanup() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
