package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/openkvs/kvs/capture"
	"github.com/openkvs/kvs/client"
)

type agentOptions struct {
	Once           bool
	StatusInterval time.Duration
}

func (o agentOptions) validate() error {
	if o.StatusInterval < time.Second {
		return fmt.Errorf("--status-interval %v: want at least 1s", o.StatusInterval)
	}
	return nil
}

func newAgentCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runAgent, &cobra.Command{
		Use:   "agent --config agent.yaml [--once] [--status-interval 1m]",
		Short: "Upload many cameras at once, each with its spool: a long-running edge process",
		Long: `Run one upload per camera of the config file (the global --config), each as put-media would
with the same settings, until SIGTERM or Ctrl-C. The file's keys are put-media's flags:

  endpoint: http://127.0.0.1:4567
  cameras:
    - name: porch
      source: rtsp://user:pass@192.0.2.10:554/stream1
      stream-name: porch
      fragment-duration: 2s
      spool-dir: /var/lib/kvs/spool/porch
      spool-max-bytes: 4GiB
      create: true
      data-retention-in-hours: 24

Each camera needs a name (in its log lines and errors), a live source (rtsp://, rtsps://, testsrc
or camera), a stream, and should have its own spool-dir: without one, what is captured while the
endpoint is unreachable is lost. A camera may also set its own endpoint and region.

Cameras are independent: one that fails (cannot be reached, refuses the password, its spool
cannot be written) is retried with backoff, with its errors in the log, and never stops another.
A status line per camera goes to the log every --status-interval; on SIGTERM every camera stops
within a few seconds (what is not acknowledged stays in its spool for the next start) and a
summary goes to the log. docs/agent.md has a systemd unit.

--once checks the file and opens each camera once, prints one line per camera, and exits 1 when
one of them is bad, naming it.`,
	})
	c.Flags().BoolVar(&o.Once, "once", false, "check the config and each camera, then exit (non-zero when one is bad)")
	c.Flags().DurationVar(&o.StatusInterval, "status-interval", time.Minute, "how often each camera's status goes to the log")
	return c
}

// agentCamera is one camera of the agent.
type agentCamera struct {
	name     string
	opts     putMediaOptions
	endpoint string
	env      *Env
	log      *slog.Logger
	watch    uploadWatch

	mu       sync.Mutex
	state    string // starting, running, waiting (to restart)
	runs     int
	lastErr  string
	done     client.ProducerStats // of the uploads that ended
	failures int
}

// cameraNameRE is what a camera name may be: it goes in log lines and file names.
var cameraNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// agentCameras reads the cameras of the config file. Their keys are put-media's flags, set
// through put-media's own flag set, so that both read values alike.
func agentCameras(env *Env) ([]*agentCamera, error) {
	raw := env.Config.Get("cameras")
	if raw == nil {
		return nil, withHint(usageErrorf("no cameras in the config file %s", configName(env.Config)),
			"Give the agent's file with --config FILE; it lists cameras: under the key cameras (kvs agent --help shows one).")
	}
	// Any other key at the top is a mistake: a misspelt endpoint would send every camera to the
	// default one, and a camera's key there is no default for the cameras.
	for _, k := range slices.Sorted(maps.Keys(env.Config.AllSettings())) {
		switch k {
		case "endpoint", "region", "log-level", "cameras":
		default:
			return nil, withHint(usageErrorf("config file %s: unknown key %q", configName(env.Config), k),
				"The file's top-level keys are endpoint, region, log-level and cameras; a camera's keys go under it (kvs agent --help).")
		}
	}
	items, ok := raw.([]any)
	if !ok || len(items) == 0 {
		return nil, usageErrorf("config file %s: cameras: want a list of cameras, each with name, source and stream-name", configName(env.Config))
	}
	var cams []*agentCamera
	names, streams, spools := map[string]bool{}, map[string]string{}, map[string]string{}
	for i, item := range items {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, usageErrorf("cameras[%d]: want keys (name, source, stream-name, ...), got %v", i, item)
		}
		cam, err := agentCamera1(env, i, m)
		if err != nil {
			return nil, err
		}
		switch {
		case names[cam.name]:
			return nil, usageErrorf("camera %s: the name is used twice", cam.name)
		case streams[cam.opts.Stream.String()] != "":
			return nil, usageErrorf("camera %s: stream %s is also camera %s's: one camera per stream", cam.name, cam.opts.Stream, streams[cam.opts.Stream.String()])
		case cam.opts.SpoolDir != "" && spools[filepath.Clean(cam.opts.SpoolDir)] != "":
			return nil, usageErrorf("camera %s: spool-dir %s is also camera %s's: one spool per camera", cam.name, cam.opts.SpoolDir, spools[filepath.Clean(cam.opts.SpoolDir)])
		}
		names[cam.name], streams[cam.opts.Stream.String()] = true, cam.name
		if cam.opts.SpoolDir != "" {
			spools[filepath.Clean(cam.opts.SpoolDir)] = cam.name
		}
		cams = append(cams, cam)
	}
	return cams, nil
}

func configName(v *viper.Viper) string {
	if f := v.ConfigFileUsed(); f != "" {
		return f
	}
	return "(none)"
}

// agentCamera1 reads camera i.
func agentCamera1(env *Env, i int, m map[string]any) (*agentCamera, error) {
	name, _ := m["name"].(string)
	if !cameraNameRE.MatchString(name) {
		return nil, usageErrorf("cameras[%d]: name %q: every camera needs a name of letters, digits, _ . - (up to 64), e.g. porch", i, name)
	}
	cam := &agentCamera{name: name, endpoint: env.Config.GetString("endpoint"), state: "starting"}
	c, opts := putMediaCommand(env)
	region := env.Config.GetString("region")
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m[k]
		switch k {
		case "name":
			continue
		case "endpoint", "region":
			s, ok := v.(string)
			if !ok || s == "" {
				return nil, usageErrorf("camera %s: %s: want a string", name, k)
			}
			if k == "endpoint" {
				cam.endpoint = s
			} else {
				region = s
			}
			continue
		case "output":
			return nil, usageErrorf("camera %s: output: the agent logs; it has no output per camera", name)
		}
		f := c.Flags().Lookup(k)
		if f == nil {
			return nil, withHint(usageErrorf("camera %s: unknown key %q", name, k),
				"A camera's keys are put-media's flags without the dashes (kvs put-media --help), plus name, endpoint and region.")
		}
		if v == nil { // `key:` with nothing after it: fmt.Sprint would make it the text "<nil>"
			return nil, withHint(usageErrorf("camera %s: %s: no value", name, k),
				"Give it a value, or leave the key out for put-media's default.")
		}
		if err := f.Value.Set(fmt.Sprint(v)); err != nil {
			return nil, usageErrorf("camera %s: %s: %v", name, k, err)
		}
	}
	cam.opts = *opts
	o := cam.opts
	if err := o.validate(); err != nil {
		return nil, usageErrorf("camera %s: %v", name, strings.ReplaceAll(err.Error(), "--", ""))
	}
	if capture.IsRTSPSpec(o.Source) {
		if err := capture.CheckRTSPURL(o.Source); err != nil {
			return nil, usageErrorf("camera %s: source %v", name, err)
		}
	}
	if !o.live() {
		return nil, usageErrorf("camera %s: source %s: the agent takes cameras (rtsp://, rtsps://, testsrc, camera): use put-media for files", name, sourceName(o.Source))
	}
	if o.Duration != 0 {
		return nil, usageErrorf("camera %s: duration: an agent's cameras run until it stops", name)
	}
	cfg := viper.New()
	cfg.Set("endpoint", cam.endpoint)
	cfg.Set("region", region)
	cam.log = env.Log.With("camera", name)
	cam.env = &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, Config: cfg, Log: cam.log,
		Getenv: env.Getenv, HTTPClient: env.HTTPClient}
	return cam, nil
}

func runAgent(ctx context.Context, env *Env, o agentOptions) error {
	cams, err := agentCameras(env)
	if err != nil {
		return err
	}
	if o.Once {
		return agentOnce(ctx, env, cams)
	}
	for _, cam := range cams {
		if cam.opts.SpoolDir == "" {
			cam.log.Warn("no spool-dir: what is captured while the endpoint is unreachable is lost")
		}
		if _, err := newClientAt(ctx, env, cam.endpoint); err != nil {
			return fmt.Errorf("camera %s: %w", cam.name, err)
		}
	}
	env.Log.Info("agent started", "cameras", len(cams), "config", configName(env.Config))
	started := time.Now()
	var wg sync.WaitGroup
	for _, cam := range cams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cam.run(ctx)
		}()
	}
	tick := time.NewTicker(o.StatusInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-tick.C:
			for _, cam := range cams {
				cam.status("status")
			}
		case <-ctx.Done():
		}
	}
	stopping := time.Now()
	env.Log.Info("agent stopping: finishing each camera's fragment in progress; the spools keep what is not acknowledged")
	wg.Wait()
	var total client.ProducerStats
	for _, cam := range cams {
		st := cam.status("summary")
		total.Fragments += st.Fragments
		total.Stored += st.Stored
		total.Spool.Fragments += st.Spool.Fragments
		total.Spool.Dropped += st.Spool.Dropped
	}
	env.Log.Info("agent stopped", "cameras", len(cams), "uptime", time.Since(started).Round(time.Second),
		"stop_took", time.Since(stopping).Round(time.Millisecond), "fragments", total.Fragments, "stored", total.Stored,
		"spooled", total.Spool.Fragments, "dropped", total.Spool.Dropped)
	return nil
}

// run uploads the camera until ctx is done, starting again (with backoff) after each failure.
func (cam *agentCamera) run(ctx context.Context) {
	wait := time.Second
	for ctx.Err() == nil {
		cam.setState("running", "")
		began := time.Now()
		st, err := upload(ctx, cam.env, cam.opts, &cam.watch)
		cam.mu.Lock()
		cam.runs++
		cam.done = addStats(cam.done, st)
		cam.mu.Unlock()
		cam.watch.set(nil, nil)
		if ctx.Err() != nil {
			cam.setState("stopped", "")
			return
		}
		if err == nil {
			err = errors.New("the camera's stream ended")
		}
		if time.Since(began) > 5*time.Minute {
			wait = time.Second // it worked for a while: a new problem
		}
		cam.mu.Lock()
		cam.failures++
		cam.mu.Unlock()
		cam.setState("waiting", err.Error())
		attrs := []any{"error", err, "in", wait}
		if hint := cam.hint(err); hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		cam.log.Error("camera stopped; starting it again", attrs...)
		select {
		case <-time.After(wait): // collected when not waited for (Go 1.23 timers)
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, time.Minute)
	}
}

// checkStreamWait bounds checkStream's question: the SDK's HTTP client has no timeout, and an
// endpoint that accepts connections but does not answer (a frozen server, a half-open proxy) held
// agent --once for ever; one whose packets are dropped, for minutes per camera (a connection
// timeout per attempt).
const checkStreamWait = 5 * time.Second

// checkStream fails when the endpoint says the camera's stream does not exist and the camera
// does not create it, or refuses the key the camera signs with (or there is none to sign with):
// the agent would retry it for ever. An endpoint that does not answer (within checkStreamWait)
// is no failure here (the spool holds the media until it does; the stream is checked then).
func checkStream(ctx context.Context, cam *agentCamera) error {
	cl, err := newClient(ctx, cam.env)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkStreamWait)
	defer cancel()
	_, err = cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: cam.opts.Stream.name(), StreamARN: cam.opts.Stream.arn()})
	if hint := credentialsHint(err); hint != "" {
		refused := wrapAPI(err, "%s refused the request", cam.endpoint).Error()
		return fmt.Errorf("%s. %s", strings.TrimSuffix(refused, "."), hint)
	}
	if isNotFound(err) && !cam.opts.Create {
		return fmt.Errorf("stream %s does not exist at %s: %s", cam.opts.Stream, cam.endpoint, cam.hint(err))
	}
	return nil
}

// hint says what to do about an error that retrying will not cure, in the config file's words
// (put-media's hints name its flags).
func (cam *agentCamera) hint(err error) string {
	var chunk *client.ChunkError
	if cam.opts.Create || !isNotFound(err) || errors.As(err, &chunk) {
		return ""
	}
	if cam.opts.Stream.Name == "" {
		return "the stream-arn names no stream: check it (`kvs list-streams` lists the streams)"
	}
	return "add `create: true` to this camera in the config file to make the stream, or check its stream-name (`kvs list-streams` lists the streams)"
}

func (cam *agentCamera) setState(state, lastErr string) {
	cam.mu.Lock()
	defer cam.mu.Unlock()
	cam.state = state
	if lastErr != "" {
		cam.lastErr = lastErr
	}
}

// addStats adds the counts of b to a.
func addStats(a, b client.ProducerStats) client.ProducerStats {
	a.Fragments += b.Fragments
	a.Bytes += b.Bytes
	a.Stored += b.Stored
	a.Failed += b.Failed
	a.Connections += b.Connections
	a.Resent += b.Resent
	a.Spool = b.Spool // the spool's own account, as it was when the upload ended
	return a
}

// status logs one line about the camera (msg "status" or "summary") and returns its totals.
func (cam *agentCamera) status(msg string) client.ProducerStats {
	prod, link := cam.watch.get()
	cam.mu.Lock()
	st, state, lastErr := cam.done, cam.state, cam.lastErr
	failures := cam.failures
	cam.mu.Unlock()
	if prod != nil {
		cur := prod.Stats()
		st = addStats(st, cur)
		if cur.LastError != "" {
			state, lastErr = "endpoint unreachable since "+cur.Since.Format(time.TimeOnly), cur.LastError
		}
	}
	attrs := []any{"state", state, "fragments", st.Fragments, "bytes", st.Bytes, "stored", st.Stored, "failed", st.Failed,
		"spooled", st.Spool.Fragments, "spool_bytes", st.Spool.Bytes, "dropped", st.Spool.Dropped, "restarts", failures}
	if link != nil {
		attrs = append(attrs, "camera_connected", link.Connected(), "reconnects", link.Reconnects())
	}
	if lastErr != "" {
		attrs = append(attrs, "last_error", lastErr)
	}
	cam.log.Info(msg, attrs...)
	return st
}

// agentOnce opens each camera once (and its spool directory), prints a line per camera, and fails
// naming the bad ones.
func agentOnce(ctx context.Context, env *Env, cams []*agentCamera) error {
	var bad []string
	for _, cam := range cams {
		what, err := checkCamera(ctx, cam)
		if err != nil {
			bad = append(bad, cam.name)
			fmt.Fprintf(env.Stdout, "%s: FAILED: %v\n", cam.name, err)
			continue
		}
		fmt.Fprintf(env.Stdout, "%s: ok: %s\n", cam.name, what)
	}
	if len(bad) > 0 {
		return fmt.Errorf("agent --once: %d of %d cameras failed: %s", len(bad), len(cams), strings.Join(bad, ", "))
	}
	return nil
}

// checkCamera opens the camera's source, says what it sends, and checks that its spool directory
// can be written and its stream exists (checkStream).
func checkCamera(ctx context.Context, cam *agentCamera) (string, error) {
	o := cam.opts
	if err := checkSource(cam.env, o.Source); err != nil {
		return "", err
	}
	if o.SpoolDir != "" {
		if err := os.MkdirAll(o.SpoolDir, 0o750); err != nil {
			return "", fmt.Errorf("spool-dir: %w", err)
		}
		f, err := os.CreateTemp(o.SpoolDir, ".check-*")
		if err != nil {
			return "", fmt.Errorf("spool-dir %s cannot be written: %w", o.SpoolDir, pathErr(err))
		}
		f.Close()
		os.Remove(f.Name())
	}
	src, err := o.openCamera(ctx, cam.log, func(ro *capture.RTSPOptions) {
		ro.SenderReportWait = time.Millisecond // only the tracks are looked at
	})
	if err != nil {
		return "", err
	}
	defer src.Close()
	if err := checkStream(ctx, cam); err != nil {
		return "", err
	}
	var parts []string
	for _, t := range src.Tracks() {
		if t.Width > 0 {
			parts = append(parts, fmt.Sprintf("%s %dx%d", t.CodecID, t.Width, t.Height))
		} else {
			parts = append(parts, fmt.Sprintf("%s %.0f Hz", t.CodecID, t.SamplingRate))
		}
	}
	return sourceName(o.Source) + ": " + strings.Join(parts, ", "), nil
}
