package cmd

// What the subcommands share: how a command is built around its options, the API client, and the
// --stream-name / --stream-arn pair.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideoarchivedmedia"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
)

// options is what a command's flags fill: validate checks it before anything runs.
type options interface{ validate() error }

// newCommand completes c, a subcommand whose flags fill the options it returns: it takes no
// arguments, and it runs by checking them (a failure is a usage error: exit code 2, with the usage)
// and calling run with the command's context. Each command file then holds only its options, its
// help and its flags (which the caller adds to the returned command, filling the returned options),
// and a run function that tests call directly.
func newCommand[O options](env *Env, run func(context.Context, *Env, O) error, c *cobra.Command) (*cobra.Command, *O) {
	o := new(O)
	c.Args = noArgs
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := (*o).validate(); err != nil {
			return usageError{err}
		}
		return run(c.Context(), env, *o)
	}
	return c, o
}

// withClient turns run, which calls the API, into a run function for newCommand: it builds the
// client (newClient) first. Tests call the result as they call any run function.
func withClient[O any](run func(context.Context, *Env, *client.Client, O) error) func(context.Context, *Env, O) error {
	return func(ctx context.Context, env *Env, o O) error {
		cl, err := newClient(ctx, env)
		if err != nil {
			return err
		}
		return run(ctx, env, cl, o)
	}
}

// newClient builds the API client for the resolved --endpoint and --region.
func newClient(ctx context.Context, env *Env) (*client.Client, error) {
	return newClientAt(ctx, env, env.Config.GetString("endpoint"))
}

// newDownloadClient is what a command that writes media does before its first request: it checks
// that --output-file can be created (stdout for "" and "-"), so that a bad path fails at once, and
// then builds the client.
func newDownloadClient(ctx context.Context, env *Env, outFile string) (*client.Client, error) {
	if err := checkOutputFile("--output-file", outFile); err != nil {
		return nil, err
	}
	return newClient(ctx, env)
}

// newArchivedClient builds the client of stream's archived-media endpoint for api (GetDataEndpoint
// first); verb names the command in its error.
func newArchivedClient(ctx context.Context, env *Env, stream streamRef, api types.APIName, verb string) (*kinesisvideoarchivedmedia.Client, error) {
	cl, err := newClient(ctx, env)
	if err != nil {
		return nil, err
	}
	am, err := cl.Archived(ctx, stream.String(), api)
	if err != nil {
		return nil, wrapAPI(err, "%s %s", verb, stream)
	}
	return am, nil
}

// newClientAt builds the API client for endpoint. A malformed endpoint is a usage error, whichever
// of the flag, KVS_ENDPOINT or the config file gave it.
func newClientAt(ctx context.Context, env *Env, endpoint string) (*client.Client, error) {
	// One URL, or the nodes of a kvs cluster separated by commas (a call that cannot reach one
	// goes to the next).
	for _, e := range strings.Split(endpoint, ",") {
		if e = strings.TrimSpace(e); e == "" && endpoint == "" {
			continue
		}
		// As client.New checks it: no path (an endpoint is scheme://host[:port]; the API paths
		// are appended to it), else that is exit code 1 and "client: endpoint ...".
		u, err := url.Parse(strings.TrimSuffix(e, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			if env.endpointFromAWS {
				return nil, withHint(usageErrorf("endpoint %q from the AWS configuration: want http(s)://host[:port]", e),
					awsEndpointNote+" --endpoint or KVS_ENDPOINT overrides it.")
			}
			return nil, withHint(usageErrorf("--endpoint %q: want http(s)://host[:port]", e),
				"Set --endpoint, KVS_ENDPOINT or endpoint: in the config file to the URL `kvs server` prints, e.g. http://127.0.0.1:4567, or to several such URLs separated by commas (the nodes of a cluster).")
		}
	}
	// The region as the client will sign with it (--region, KVS_REGION, the config file, else the
	// AWS configuration's): one the SDK cannot put in an endpoint fails every request with "failed
	// to bind endpoint params" (and get-media retried that for 26 s), so it is a usage error here.
	region := client.Region(ctx, env.Config.GetString("region"))
	if !validRegion(region) {
		return nil, withHint(usageErrorf("--region %q: not a region name", region),
			"Set --region, KVS_REGION or region: in the config file (else AWS_REGION or the AWS profile's region is used) to a region such as eu-west-1.")
	}
	cl, err := client.New(ctx, client.Config{
		Endpoint:   endpoint,
		Region:     region,
		HTTPClient: env.HTTPClient,
	})
	var noProfile config.SharedConfigProfileNotExistError
	if errors.As(err, &noProfile) {
		return nil, withHint(usageErrorf("AWS profile %q (AWS_PROFILE) is not in the AWS configuration files", noProfile.Profile),
			"Set AWS_PROFILE to a profile of ~/.aws/config or ~/.aws/credentials (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), or unset it for the default one.")
	}
	return cl, err
}

// validRegion reports whether the AWS SDK takes region: host name labels (letters, digits and
// dashes, not at either end) separated by dots, as its endpoint rules check.
func validRegion(region string) bool {
	for _, l := range strings.Split(region, ".") {
		if !smithyhttp.ValidHostLabel(l) || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
	}
	return true
}

// streamRef is the --stream-name / --stream-arn pair most commands take; one of them is required.
type streamRef struct {
	Name, ARN string
}

func (r streamRef) validate() error {
	if r.Name == "" && r.ARN == "" {
		return errors.New("--stream-name or --stream-arn is required")
	}
	return nil
}

func (r streamRef) String() string {
	if r.Name != "" {
		return r.Name
	}
	return r.ARN
}

// flag is r as a flag to paste into another command: "--stream-name cam", "--stream-arn ARN"
// (shell-quoted where needed), else "--stream-name NAME".
func (r streamRef) flag() string {
	switch {
	case r.Name != "":
		return "--stream-name " + shellQuote(r.Name)
	case r.ARN != "":
		return "--stream-arn " + shellQuote(r.ARN)
	}
	return "--stream-name NAME"
}

// name and arn are the StreamName and StreamARN members of an API request (nil when not given).
func (r streamRef) name() *string { return optional(r.Name) }
func (r streamRef) arn() *string  { return optional(r.ARN) }

func addStreamRefFlags(c *cobra.Command, r *streamRef) {
	c.Flags().StringVar(&r.Name, "stream-name", "", "stream name")
	c.Flags().StringVar(&r.ARN, "stream-arn", "", "stream ARN (instead of --stream-name)")
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// The checks a validate lists, in the order they are reported: cmp.Or(check, check...) gives
// the first failure. Each names the flag as the user typed it.

// errorIf is the error msg when failed holds.
func errorIf(failed bool, msg string) error {
	if failed {
		return errors.New(msg)
	}
	return nil
}

// oneOf checks that flag's value v is one of allowed: `--format "x": want mkv or raw`.
func oneOf(flag, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("%s %q: want %s", flag, v, strings.Join(allowed, " or "))
}

// inRange checks that flag's value v is in [lo, hi]: "--parallel 0: want 1 to 64".
func inRange(flag string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d: want %d to %d", flag, v, lo, hi)
	}
	return nil
}

// splitList flattens comma-separated and repeated list flag values, dropping empty items.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
