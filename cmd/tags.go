package cmd

// The tagging commands: tag-stream, untag-stream and list-tags-for-stream (TagStream, UntagStream,
// ListTagsForStream), with the AWS CLI's flag names.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
)

// parseTags reads --tags values in the AWS CLI shorthand "k=v,k2=v2"; the flag may also repeat.
// A value may contain "=" (split at the first); tag keys and values cannot contain commas. Blanks
// around a key or a value are dropped, as the AWS CLI's shorthand drops them ("a=1, b = 2"). A
// value may also be a JSON object, the AWS CLI's other form: {"k":"v","k2":"v2"}.
func parseTags(values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	tags := map[string]string{}
	for _, v := range values {
		if isJSON(v, '{') {
			var m map[string]string
			if err := json.Unmarshal([]byte(v), &m); err != nil {
				return nil, fmt.Errorf("--tags %q: want a JSON object of strings: %w", v, err)
			}
			maps.Copy(tags, m)
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if !ok || k == "" {
				return nil, fmt.Errorf("--tags %q: want key=value[,key=value...]", v)
			}
			tags[k] = val
		}
	}
	return tags, nil
}

type tagStreamOptions struct {
	Stream streamRef
	Tags   []string
	Output string // nothing is printed in any format: taken as the AWS CLI takes it
}

func (o tagStreamOptions) validate() error {
	_, tagsErr := parseTags(o.Tags)
	return cmp.Or(o.Stream.validate(), errorIf(len(o.Tags) == 0, "--tags is required"), tagsErr, validateQuietOutput(o.Output))
}

func newTagStreamCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runTagStream, &cobra.Command{
		Use:   "tag-stream (--stream-name NAME | --stream-arn ARN) --tags k=v[,k=v...]",
		Short: "Add or replace tags on a stream",
	})
	addStreamRefFlags(c, &o.Stream)
	c.Flags().StringArrayVar(&o.Tags, "tags", nil, "tags as key=value[,key=value...] or a JSON object; may repeat (required)")
	addOutputFlag(c.Flags(), &o.Output)
	return c
}

var runTagStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o tagStreamOptions) error {
	tags, _ := parseTags(o.Tags) // checked by validate
	_, err := cl.Control.TagStream(ctx, &kinesisvideo.TagStreamInput{StreamName: o.Stream.name(), StreamARN: o.Stream.arn(), Tags: tags})
	return wrapAPI(err, "tag-stream %s", o.Stream)
})

// isJSON reports whether a flag value is in the AWS CLI's JSON form: it starts with open ('{' for
// an object, '[' for a list) after any blanks.
func isJSON(v string, open byte) bool {
	v = strings.TrimSpace(v)
	return v != "" && v[0] == open
}

// tagKeys reads --tag-key-list values: comma-separated, repeated, or JSON lists (["k1","k2"]).
func tagKeys(values []string) ([]string, error) {
	var keys []string
	for _, v := range values {
		if !isJSON(v, '[') {
			keys = append(keys, splitList([]string{v})...)
			continue
		}
		var list []string
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, fmt.Errorf("--tag-key-list %q: want a JSON list of strings: %w", v, err)
		}
		keys = append(keys, list...)
	}
	return keys, nil
}

type untagStreamOptions struct {
	Stream streamRef
	Keys   []string
	Output string // nothing is printed in any format: taken as the AWS CLI takes it
}

func (o untagStreamOptions) validate() error {
	keys, err := tagKeys(o.Keys)
	return cmp.Or(o.Stream.validate(), err, errorIf(len(keys) == 0, "--tag-key-list is required"), validateQuietOutput(o.Output))
}

func newUntagStreamCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runUntagStream, &cobra.Command{
		Use:   "untag-stream (--stream-name NAME | --stream-arn ARN) --tag-key-list k[,k...]",
		Short: "Remove tags from a stream",
	})
	addStreamRefFlags(c, &o.Stream)
	c.Flags().StringArrayVar(&o.Keys, "tag-key-list", nil, "tag keys, comma-separated or, as the AWS CLI takes them, separated by spaces or as a JSON list; may repeat (required)")
	addOutputFlag(c.Flags(), &o.Output)
	// The AWS CLI's form: --tag-key-list k1 k2 (the words after the flag are more keys).
	run := c.RunE
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		o.Keys = append(o.Keys, args...)
		return run(cmd, nil)
	}
	return c
}

var runUntagStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o untagStreamOptions) error {
	keys, _ := tagKeys(o.Keys) // checked by validate
	_, err := cl.Control.UntagStream(ctx, &kinesisvideo.UntagStreamInput{StreamName: o.Stream.name(), StreamARN: o.Stream.arn(), TagKeyList: keys})
	return wrapAPI(err, "untag-stream %s", o.Stream)
})

func newListTagsForStreamCmd(env *Env) *cobra.Command {
	return newStreamOutputCmd(env, runListTagsForStream, &cobra.Command{
		Use:   "list-tags-for-stream (--stream-name NAME | --stream-arn ARN)",
		Short: "Print a stream's tags",
	})
}

var runListTagsForStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o streamOutputOptions) error {
	tags := map[string]string{}
	haveTags := false // the answer has a Tags member (--output text prints only what it has)
	in := &kinesisvideo.ListTagsForStreamInput{StreamName: o.Stream.name(), StreamARN: o.Stream.arn()}
	for {
		out, err := cl.Control.ListTagsForStream(ctx, in)
		if err != nil {
			return wrapAPI(err, "list-tags-for-stream %s", o.Stream)
		}
		maps.Copy(tags, out.Tags)
		haveTags = haveTags || out.Tags != nil
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	if o.Output == outputText {
		m := map[string]any{}
		if haveTags {
			m["Tags"] = tagsText(tags)
		}
		return writeText(env.Stdout, m)
	}
	if o.Output == outputTable {
		return writeTagTable(env.Stdout, tags)
	}
	return writeJSON(env.Stdout, struct {
		Tags map[string]string `json:"Tags"`
	}{tags})
})

func writeTagTable(w io.Writer, tags map[string]string) error {
	rows := make([][]string, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		rows = append(rows, []string{k, tags[k]})
	}
	return writeTable(w, []string{"KEY", "VALUE"}, rows)
}
