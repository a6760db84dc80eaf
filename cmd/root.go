// Package cmd holds the kvs command tree: NewRoot builds it, Main runs it. One file per subcommand;
// each command fills an options struct from its flags, validates it and calls a plain run function
// that tests call directly.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/openkvs/kvs/client"
)

// Exit codes, listed in the root help.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitInterrupted = 130
)

// version is stamped by goreleaser (-X github.com/openkvs/kvs/cmd.version=...). Under go run /
// go install it stays "dev" and Version falls back to the module version from the build info.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// Version returns the kvs version string.
func Version() string {
	v := version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return v
}

// Env is everything a command may touch besides its flags; tests build one by hand.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Config holds the resolved global settings (flags > KVS_* environment > config file > defaults).
	Config *viper.Viper
	// Log is built from --log-level once the flags are parsed.
	Log *slog.Logger
	// Getenv reads the environment (tests replace it).
	Getenv func(string) string
	// HTTPClient, if set, carries every request to the server (tests count connection attempts
	// with it); nil means the AWS SDK's client.
	HTTPClient *http.Client

	endpointFromAWS  bool   // the endpoint is the AWS configuration's (awsEndpoint)
	endpointFromFile string // the config file the endpoint came from, if it did
}

// awsEndpointNote says where an endpoint from awsEndpoint came from.
const awsEndpointNote = "The endpoint in use came from the AWS configuration: AWS_ENDPOINT_URL_KINESIS_VIDEO, AWS_ENDPOINT_URL or endpoint_url in the AWS profile."

// awsEndpoint is the Kinesis Video endpoint the AWS configuration names, as the AWS CLI and the
// AWS SDKs read it (aws-sdk-go-v2 does the reading): AWS_ENDPOINT_URL_KINESIS_VIDEO, else
// AWS_ENDPOINT_URL, else the profile's services section (kinesis_video = endpoint_url = ...), else
// its endpoint_url; none of them when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS or the profile's
// ignore_configured_endpoint_urls is true. "" when there is none, or the configuration does not
// load (newClientAt reports that).
func awsEndpoint(ctx context.Context) string {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	if err != nil {
		return ""
	}
	return aws.ToString(kinesisvideo.NewFromConfig(cfg).Options().BaseEndpoint)
}

// usageError marks errors caused by how the command was called (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// notFoundError marks "the stream or fragment does not exist" (exit code 3).
type notFoundError struct{ error }

func (e notFoundError) Unwrap() error { return e.error }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

const rootLong = `kvs is a local Amazon Kinesis Video Streams: a single-binary server that speaks the KVS HTTP APIs
(the AWS CLI and the AWS SDKs work against it by changing only the endpoint URL), and a client that puts
media into a stream and gets it back out, live or by time range.

Global settings come from flags, then KVS_* environment variables (KVS_ENDPOINT, KVS_REGION,
KVS_LOG_LEVEL), then the config file (--config or KVS_CONFIG, else $XDG_CONFIG_HOME/kvs/config.yaml;
YAML keys endpoint, region, log-level), then defaults.
With none of those, the endpoint is the one the AWS CLI would use: AWS_ENDPOINT_URL_KINESIS_VIDEO,
else AWS_ENDPOINT_URL, else the AWS profile's endpoint_url (its services section first), unless
AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true; else http://127.0.0.1:4567.

Exit codes:
  0    success
  1    error
  2    usage error (bad flags or arguments)
  3    the stream or fragment was not found
  130  interrupted (Ctrl-C)`

// NewRoot builds the kvs command tree around env.
func NewRoot(env *Env) *cobra.Command {
	if env.Config == nil {
		env.Config = viper.New()
	}
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Stdin == nil {
		env.Stdin = os.Stdin
	}
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	root := &cobra.Command{
		Use:           "kvs",
		Short:         "A local Kinesis Video Streams server and client",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       Version(),
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := loadConfig(c.Context(), env, c.Root().PersistentFlags()); err != nil {
				return err
			}
			if c.Name() != "agent" { // the agent refuses them (agentCameras)
				warnUnknownConfigKeys(env)
			}
			return nil
		},
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetVersionTemplate("kvs {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.String("endpoint", "http://127.0.0.1:4567", "KVS endpoint URL (control plane; media endpoints come from GetDataEndpoint); the nodes of a kvs cluster as URLs separated by commas (default: KVS_ENDPOINT, the config file's endpoint, else the AWS CLI's: AWS_ENDPOINT_URL_KINESIS_VIDEO, AWS_ENDPOINT_URL, the AWS profile's endpoint_url; else http://127.0.0.1:4567)")
	pf.String("region", "", "AWS region used for signing requests and, by kvs server, in ARNs (default: AWS_REGION or the AWS profile's region, else us-east-1)")
	pf.String("config", "", "config file, YAML with the keys endpoint, region, log-level (default: KVS_CONFIG, else $XDG_CONFIG_HOME/kvs/config.yaml)")
	pf.String("log-level", "info", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	// Every subcommand, in one place (cobra sorts them by name in the help).
	root.AddCommand(
		// the server and its load test
		newServeCmd(env),
		newBenchCmd(env),
		// media in and out
		newPutMediaCmd(env),
		newAgentCmd(env),
		newGetMediaCmd(env),
		newListFragmentsCmd(env),
		newGetFragmentsCmd(env),
		newGetClipCmd(env),
		newHLSURLCmd(env),
		newDASHURLCmd(env),
		newGetImagesCmd(env),
		newListDevicesCmd(env),
		// the control plane
		newCreateStreamCmd(env),
		newDescribeStreamCmd(env),
		newListStreamsCmd(env),
		newDeleteStreamCmd(env),
		newUpdateDataRetentionCmd(env),
		newUpdateStreamCmd(env),
		newTagStreamCmd(env),
		newUntagStreamCmd(env),
		newListTagsForStreamCmd(env),
		newVersionCmd(env),
	)
	return root
}

// configKeys are the top-level keys a config file may have: the global settings, and the
// agent's cameras.
var configKeys = []string{"endpoint", "region", "log-level", "cameras"}

// warnUnknownConfigKeys warns of each top-level key of the config file that no command reads: a
// misspelt region or endpoint was ignored without a word, and the default used.
func warnUnknownConfigKeys(env *Env) {
	if env.Config.ConfigFileUsed() == "" {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(env.Config.AllSettings())) {
		if !slices.Contains(configKeys, k) {
			env.Log.Warn("config file: unknown key, ignored", "file", configName(env.Config), "key", k,
				"keys", strings.Join(configKeys, ", "))
		}
	}
}

// loadConfig resolves the global settings into env.Config and builds env.Log.
func loadConfig(ctx context.Context, env *Env, flags *pflag.FlagSet) error {
	v := env.Config
	v.SetDefault("endpoint", "http://127.0.0.1:4567")
	v.SetDefault("log-level", "info")
	v.SetEnvPrefix("KVS")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	for _, k := range []string{"endpoint", "region", "log-level"} {
		if err := v.BindEnv(k); err != nil {
			return err
		}
		if err := v.BindPFlag(k, flags.Lookup(k)); err != nil {
			return err
		}
	}
	path, _ := flags.GetString("config")
	explicit := path != ""
	if !explicit {
		path = env.Getenv("KVS_CONFIG")
		explicit = path != ""
	}
	if !explicit {
		dir := env.Getenv("XDG_CONFIG_HOME")
		if dir == "" {
			if home := env.Getenv("HOME"); home != "" {
				dir = filepath.Join(home, ".config")
			}
		}
		if dir != "" {
			path = filepath.Join(dir, "kvs", "config.yaml")
		}
	}
	if path != "" {
		v.SetConfigFile(path)
		if ext := strings.TrimPrefix(filepath.Ext(path), "."); !slices.Contains(viper.SupportedExts, ext) {
			// viper picks the format by the extension, and refused any other name (~/.kvsrc,
			// agent.conf) as "Unsupported Config Type", even one that does not exist: such a
			// file is YAML, the format of config.yaml.
			v.SetConfigType("yaml")
		}
		if err := v.ReadInConfig(); err != nil {
			var notFound viper.ConfigFileNotFoundError
			if explicit || !(errors.As(err, &notFound) || errors.Is(err, os.ErrNotExist)) {
				if errors.Is(err, os.ErrNotExist) {
					return withHint(usageErrorf("config file %s does not exist", path),
						"Give --config (KVS_CONFIG) an existing file, or leave it out for $XDG_CONFIG_HOME/kvs/config.yaml.")
				}
				return usageErrorf("config file %s: %v", path, pathErr(err))
			}
		}
	}
	// kvs's own settings first; else where the AWS CLI and SDKs would send Kinesis Video requests.
	env.endpointFromAWS, env.endpointFromFile = false, ""
	if !flags.Changed("endpoint") && os.Getenv("KVS_ENDPOINT") == "" {
		if v.InConfig("endpoint") {
			env.endpointFromFile = v.ConfigFileUsed()
		} else if ep := awsEndpoint(ctx); ep != "" {
			v.Set("endpoint", ep)
			env.endpointFromAWS = true
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log-level"))); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", v.GetString("log-level"))
	}
	env.Log = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

func newVersionCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kvs version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			s := "kvs " + Version()
			if commit != "" {
				s += " (" + commit
				if date != "" {
					s += ", " + date
				}
				s += ")"
			}
			_, err := fmt.Fprintln(env.Stdout, s)
			return err
		},
	}
}

// Main runs kvs with the process's arguments and returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	// For profiling any command (scripts/perf.sh): a CPU profile and an execution trace (go tool
	// trace: where goroutines wait, not only where CPU goes) of the whole run.
	defer profile(env, "KVS_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)()
	defer profile(env, "KVS_TRACE", trace.Start, trace.Stop)()
	return Run(ctx, env, os.Args[1:])
}

// profile starts writing a profile to the file named by the environment variable env (%p in it
// becomes the process ID: kvs bench --embedded starts a kvs server child) and returns what ends it.
func profile(e *Env, env string, start func(io.Writer) error, stop func()) (end func()) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
	if err == nil {
		if err = start(f); err == nil {
			return func() { stop(); f.Close() }
		}
		f.Close()
	}
	fmt.Fprintf(e.Stderr, "kvs: %s: %v\n", env, err)
	return func() {}
}

// Run executes the command line args in env and maps the outcome to an exit code. It is the one
// place where errors become exit codes.
func Run(ctx context.Context, env *Env, args []string) int {
	root := NewRoot(env)
	root.SetArgs(args)
	c, err := root.ExecuteContextC(ctx)
	return exitCode(env, c, ctx, err)
}

func exitCode(env *Env, c *cobra.Command, ctx context.Context, err error) int {
	var ue usageError
	var nf notFoundError
	var code int
	var msg, hint string
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		return ExitInterrupted
	case errors.As(err, &ue) || isCobraUsage(err):
		code = ExitUsage
		msg, hint = usageMessage(c, err)
	default:
		code = ExitError
		if errors.As(err, &nf) || isNotFound(err) {
			code = ExitNotFound
		}
		msg, hint = errorMessage(env, c, err)
	}
	if d := detail(err); d != msg {
		env.Log.Debug("error detail", "error", d)
	}
	fmt.Fprintf(env.Stderr, "kvs: %s\n", msg)
	if hint != "" {
		fmt.Fprintln(env.Stderr, hint)
	}
	return code
}

// errorMessage returns what Run prints for an error that is not a usage error: the message, and
// what to do about it when that is known.
func errorMessage(env *Env, c *cobra.Command, err error) (msg, hint string) {
	msg = err.Error()
	var he hintError
	if errors.As(err, &he) {
		hint = he.hint
	}
	if hint == "" {
		hint = credentialsHint(err)
	}
	var chunk *client.ChunkError
	if hint == "" && isNotFound(err) && !errors.As(err, &chunk) && c != nil {
		// A stream that does not exist (a missing fragment comes as an error chunk).
		hint = "Check the name: `kvs list-streams` lists the streams; `kvs create-stream` makes one."
		if c.Flags().Lookup("create") != nil {
			hint = "Add --create to make it, or check the name: `kvs list-streams` lists the streams."
		}
		// The stream exists; a fragment or a time range does not (GetMediaForFragmentList,
		// GetClip, HLS, GetMedia FRAGMENT_NUMBER answer ResourceNotFoundException for those too).
		var m interface{ ErrorMessage() string }
		if errors.As(err, &m) && strings.Contains(strings.ToLower(m.ErrorMessage()), "fragment") {
			hint = "The stream exists but holds no such fragment: `kvs list-fragments " + streamFlag(c) + " --output table` lists the fragments stored and their times."
		}
	}
	f, ok := diagnose(err)
	if !ok {
		return msg, hint
	}
	var ae *apiError
	if !errors.As(err, &ae) && c != nil {
		// A failure to reach the server that no command wrapped: name the command, not the SDK.
		msg = c.Name() + ": " + f.what
	}
	endpoint := ""
	if env.Config != nil {
		endpoint = env.Config.GetString("endpoint")
	}
	if hint == "" {
		hint = f.hint(endpoint)
		if strings.Contains(hint, "--endpoint (KVS_ENDPOINT)") {
			switch {
			case env.endpointFromAWS:
				hint += " " + awsEndpointNote
			case env.endpointFromFile != "":
				hint += " The endpoint in use came from the config file " + env.endpointFromFile + " (its endpoint: key)."
			}
		}
	}
	return msg, hint
}

// streamFlag is the stream as the user gave it to c (streamRef.flag).
func streamFlag(c *cobra.Command) string {
	var r streamRef
	if f := c.Flags().Lookup("stream-name"); f != nil {
		r.Name = f.Value.String()
	}
	if f := c.Flags().Lookup("stream-arn"); f != nil {
		r.ARN = f.Value.String()
	}
	return r.flag()
}

// shellQuote is s as one word for a POSIX shell: as it is when it needs no quoting, else in
// single quotes.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.,:/@%+=", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// detail is the whole text of err, the SDK's chain included, for the debug log.
func detail(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.what + ": " + ae.err.Error()
	}
	return err.Error()
}

// isCobraUsage recognises cobra's own argument errors (unknown command, wrong arg count), which it
// returns as plain errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "arg(s), received") ||
		strings.HasPrefix(s, "required flag(s)") || strings.HasPrefix(s, "invalid argument")
}

// isNotFound reports whether err is a KVS ResourceNotFoundException from any client.
func isNotFound(err error) bool {
	var coded interface{ ErrorCode() string }
	if errors.As(err, &coded) && coded.ErrorCode() == "ResourceNotFoundException" {
		return true
	}
	return false
}
