package cmd

// What the subcommands share: how a command is built around its options, the API client, and the
// --stream-name / --stream-arn pair.

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
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

// withClient is a run function made of one that calls the API: it builds the client (newClient)
// and then calls run with it.
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

// newClientAt builds the API client for endpoint. A malformed endpoint is a usage error, whichever
// of the flag, KVS_ENDPOINT or the config file gave it.
func newClientAt(ctx context.Context, env *Env, endpoint string) (*client.Client, error) {
	// One URL, or the nodes of a kvs cluster separated by commas (a call that cannot reach one
	// goes to the next).
	for _, e := range strings.Split(endpoint, ",") {
		if e = strings.TrimSpace(e); e == "" && endpoint == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, withHint(usageErrorf("--endpoint %q: want http(s)://host[:port]", e),
				"Set --endpoint, KVS_ENDPOINT or endpoint: in the config file to the URL `kvs server` prints, e.g. http://127.0.0.1:4567, or to several such URLs separated by commas (the nodes of a cluster).")
		}
	}
	return client.New(ctx, client.Config{
		Endpoint:   endpoint,
		Region:     env.Config.GetString("region"),
		HTTPClient: env.HTTPClient,
	})
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
