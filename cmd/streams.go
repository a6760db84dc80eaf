package cmd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo"
	"github.com/aws/aws-sdk-go-v2/service/kinesisvideo/types"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/openkvs/kvs/client"
)

// The stream commands are thin wrappers over the kinesisvideo control-plane API through the AWS
// SDK, so they work against kvs and against AWS alike. Flag names are the AWS CLI's; the JSON output
// has the AWS CLI's shape (see output.go).

// streamInfoOutput is StreamInfo as printed: the AWS CLI's member names, CreationTime as RFC 3339.
type streamInfoOutput struct {
	DeviceName           string `json:"DeviceName,omitempty"`
	StreamName           string `json:"StreamName"`
	StreamARN            string `json:"StreamARN"`
	MediaType            string `json:"MediaType,omitempty"`
	KmsKeyID             string `json:"KmsKeyId,omitempty"`
	Version              string `json:"Version"`
	Status               string `json:"Status"`
	CreationTime         string `json:"CreationTime,omitempty"`
	DataRetentionInHours int32  `json:"DataRetentionInHours"`
}

func toStreamInfoOutput(si *types.StreamInfo) streamInfoOutput {
	return streamInfoOutput{
		DeviceName:           aws.ToString(si.DeviceName),
		StreamName:           aws.ToString(si.StreamName),
		StreamARN:            aws.ToString(si.StreamARN),
		MediaType:            aws.ToString(si.MediaType),
		KmsKeyID:             aws.ToString(si.KmsKeyId),
		Version:              aws.ToString(si.Version),
		Status:               string(si.Status),
		CreationTime:         formatTime(aws.ToTime(si.CreationTime)),
		DataRetentionInHours: aws.ToInt32(si.DataRetentionInHours),
	}
}

// ---- create-stream

type createStreamOptions struct {
	StreamName     string
	DeviceName     string
	MediaType      string
	KmsKeyID       string
	RetentionHours int
	Tags           []string
	Output         string
}

func (o createStreamOptions) validate() error {
	_, tagsErr := parseTags(o.Tags)
	return cmp.Or(errorIf(o.StreamName == "", "--stream-name is required"),
		inRange("--data-retention-in-hours", o.RetentionHours, 0, 87600), tagsErr, validateOutput(o.Output))
}

func newCreateStreamCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runCreateStream, &cobra.Command{
		Use:   "create-stream --stream-name NAME [--data-retention-in-hours N] [--media-type T] [--tags k=v,...]",
		Short: "Create a stream",
		Long: `Create a stream (CreateStream). Retention 0, the default, keeps no data beyond the live buffer:
give --data-retention-in-hours to store fragments for later reading.`,
	})
	f := c.Flags()
	f.StringVar(&o.StreamName, "stream-name", "", "stream name (required)")
	f.StringVar(&o.DeviceName, "device-name", "", "name of the device writing to the stream")
	f.StringVar(&o.MediaType, "media-type", "", "media type, e.g. video/h264 or video/h264,audio/aac")
	f.StringVar(&o.KmsKeyID, "kms-key-id", "", "KMS key for encryption at rest (default: the AWS-managed key)")
	f.IntVar(&o.RetentionHours, "data-retention-in-hours", 0, "hours to keep data (0 to 87600)")
	f.StringArrayVar(&o.Tags, "tags", nil, "tags as key=value[,key=value...] or a JSON object; may repeat")
	addOutputFlag(f, &o.Output)
	return c
}

var runCreateStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o createStreamOptions) error {
	tags, _ := parseTags(o.Tags) // checked by validate
	in := &kinesisvideo.CreateStreamInput{
		StreamName: aws.String(o.StreamName),
		DeviceName: optional(o.DeviceName),
		MediaType:  optional(o.MediaType),
		KmsKeyId:   optional(o.KmsKeyID),
		Tags:       tags,
	}
	if o.RetentionHours != 0 {
		in.DataRetentionInHours = aws.Int32(int32(o.RetentionHours)) //nolint:gosec // range-checked in validate
	}
	out, err := cl.Control.CreateStream(ctx, in)
	if err != nil {
		return wrapAPI(err, "create-stream %s", o.StreamName)
	}
	arn := aws.ToString(out.StreamARN)
	if o.Output == outputText {
		m := map[string]any{}
		putText(m, "StreamARN", out.StreamARN, same)
		return writeText(env.Stdout, m)
	}
	if o.Output == outputTable {
		return writeTable(env.Stdout, []string{"STREAM", "ARN"}, [][]string{{o.StreamName, arn}})
	}
	return writeJSON(env.Stdout, struct {
		StreamARN string `json:"StreamARN"`
	}{arn})
})

// ---- describe-stream

// streamOutputOptions are the options of the commands that print something of one stream
// (describe-stream, list-tags-for-stream): the stream, and --output.
type streamOutputOptions struct {
	Stream streamRef
	Output string
}

func (o streamOutputOptions) validate() error {
	return cmp.Or(o.Stream.validate(), validateOutput(o.Output))
}

// newStreamOutputCmd completes c, a command that prints something of one stream, with its flags.
func newStreamOutputCmd(env *Env, run func(context.Context, *Env, streamOutputOptions) error, c *cobra.Command) *cobra.Command {
	c, o := newCommand(env, run, c)
	addStreamRefFlags(c, &o.Stream)
	addOutputFlag(c.Flags(), &o.Output)
	return c
}

func newDescribeStreamCmd(env *Env) *cobra.Command {
	return newStreamOutputCmd(env, runDescribeStream, &cobra.Command{
		Use:   "describe-stream (--stream-name NAME | --stream-arn ARN)",
		Short: "Show a stream's settings",
	})
}

var runDescribeStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o streamOutputOptions) error {
	out, err := cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: o.Stream.name(), StreamARN: o.Stream.arn()})
	if err != nil {
		return wrapAPI(err, "describe-stream %s", o.Stream)
	}
	if o.Output == outputText {
		m := map[string]any{}
		if out.StreamInfo != nil {
			m["StreamInfo"] = streamInfoText(out.StreamInfo)
		}
		return writeText(env.Stdout, m)
	}
	si := toStreamInfoOutput(out.StreamInfo)
	if o.Output == outputTable {
		return writeTable(env.Stdout, []string{"FIELD", "VALUE"}, [][]string{
			{"StreamName", si.StreamName},
			{"StreamARN", si.StreamARN},
			{"Status", si.Status},
			{"DataRetentionInHours", strconv.Itoa(int(si.DataRetentionInHours))},
			{"MediaType", si.MediaType},
			{"DeviceName", si.DeviceName},
			{"KmsKeyId", si.KmsKeyID},
			{"Version", si.Version},
			{"CreationTime", si.CreationTime},
		})
	}
	return writeJSON(env.Stdout, struct {
		StreamInfo streamInfoOutput `json:"StreamInfo"`
	}{si})
})

// ---- list-streams

type listStreamsOptions struct {
	MaxResults          int
	NextToken           string
	StreamNameCondition string // AWS CLI shorthand: ComparisonOperator=BEGINS_WITH,ComparisonValue=PREFIX
	NamePrefix          string
	Output              string
}

func (o listStreamsOptions) validate() error {
	if o.MaxResults < 0 {
		return fmt.Errorf("--max-results %d: want a positive number", o.MaxResults)
	}
	if o.StreamNameCondition != "" && o.NamePrefix != "" {
		return errors.New("give --stream-name-condition or --name-prefix, not both")
	}
	if _, err := o.prefix(); err != nil {
		return err
	}
	return validateOutput(o.Output)
}

// prefix returns the name prefix from --name-prefix or --stream-name-condition.
func (o listStreamsOptions) prefix() (string, error) {
	if o.StreamNameCondition == "" {
		return o.NamePrefix, nil
	}
	var op, value string
	if isJSON(o.StreamNameCondition, '{') {
		// The AWS CLI's JSON form.
		var c struct{ ComparisonOperator, ComparisonValue string }
		dec := json.NewDecoder(strings.NewReader(o.StreamNameCondition))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return "", fmt.Errorf("--stream-name-condition %q: want {\"ComparisonOperator\":\"BEGINS_WITH\",\"ComparisonValue\":\"PREFIX\"}: %w", o.StreamNameCondition, err)
		}
		op, value = c.ComparisonOperator, c.ComparisonValue
	} else {
		for _, kv := range strings.Split(o.StreamNameCondition, ",") {
			k, v, _ := strings.Cut(kv, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v) // as the AWS CLI's shorthand
			switch k {
			case "ComparisonOperator":
				op = v
			case "ComparisonValue":
				value = v
			default:
				return "", fmt.Errorf("--stream-name-condition %q: want ComparisonOperator=BEGINS_WITH,ComparisonValue=PREFIX", o.StreamNameCondition)
			}
		}
	}
	if op != "" && op != string(types.ComparisonOperatorBeginsWith) {
		return "", fmt.Errorf("--stream-name-condition: ComparisonOperator %q: only BEGINS_WITH exists", op)
	}
	return value, nil
}

func newListStreamsCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runListStreams, &cobra.Command{
		Use:   "list-streams [--name-prefix P] [--max-results N [--next-token T]]",
		Short: "List streams in name order",
		Long: `List streams in name order (ListStreams), following every page. With --max-results N at most N
streams are printed, and the JSON output carries a NextToken to pass to --next-token when more exist.`,
	})
	f := c.Flags()
	f.IntVar(&o.MaxResults, "max-results", 0, "print at most this many streams (default: all)")
	f.StringVar(&o.NextToken, "next-token", "", "continue after a previous --max-results listing")
	f.StringVar(&o.StreamNameCondition, "stream-name-condition", "", "ComparisonOperator=BEGINS_WITH,ComparisonValue=PREFIX, or the same as JSON (AWS CLI forms)")
	f.StringVar(&o.NamePrefix, "name-prefix", "", "only streams whose name begins with this")
	addOutputFlag(f, &o.Output)
	// The AWS CLI's pagination flags for the same thing.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "max-items":
			name = "max-results"
		case "starting-token":
			name = "next-token"
		}
		return pflag.NormalizedName(name)
	})
	return c
}

var runListStreams = withClient(func(ctx context.Context, env *Env, cl *client.Client, o listStreamsOptions) error {
	prefix, _ := o.prefix() // checked by validate
	in := &kinesisvideo.ListStreamsInput{NextToken: optional(o.NextToken)}
	if prefix != "" {
		in.StreamNameCondition = &types.StreamNameCondition{
			ComparisonOperator: types.ComparisonOperatorBeginsWith, ComparisonValue: aws.String(prefix)}
	}
	resp := struct {
		StreamInfoList []streamInfoOutput `json:"StreamInfoList"`
		NextToken      string             `json:"NextToken,omitempty"`
	}{StreamInfoList: []streamInfoOutput{}}
	for {
		if o.MaxResults > 0 {
			in.MaxResults = aws.Int32(int32(min(o.MaxResults-len(resp.StreamInfoList), 10000))) //nolint:gosec // ≤ 10000
		}
		out, err := cl.Control.ListStreams(ctx, in)
		if err != nil {
			return wrapAPI(err, "list-streams")
		}
		page := make([]any, 0, len(out.StreamInfoList))
		for i := range out.StreamInfoList {
			resp.StreamInfoList = append(resp.StreamInfoList, toStreamInfoOutput(&out.StreamInfoList[i]))
			page = append(page, streamInfoText(&out.StreamInfoList[i]))
		}
		if o.Output == outputText {
			// As the AWS CLI prints a paginated answer: page by page, so that the columns of
			// streams are those of the streams in the same page.
			if err := writeText(env.Stdout, map[string]any{"StreamInfoList": page}); err != nil {
				return err
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		if o.MaxResults > 0 && len(resp.StreamInfoList) >= o.MaxResults {
			resp.NextToken = aws.ToString(out.NextToken)
			break
		}
		in.NextToken = out.NextToken
	}
	if o.Output == outputText {
		if resp.NextToken != "" {
			return writeText(env.Stdout, map[string]any{"NextToken": map[string]any{"NextToken": resp.NextToken}})
		}
		return nil
	}
	if o.Output == outputTable {
		rows := make([][]string, 0, len(resp.StreamInfoList))
		for _, si := range resp.StreamInfoList {
			rows = append(rows, []string{si.StreamName, si.Status, strconv.Itoa(int(si.DataRetentionInHours)),
				si.MediaType, si.CreationTime, si.StreamARN})
		}
		return writeTable(env.Stdout, []string{"NAME", "STATUS", "RETENTION_HOURS", "MEDIA_TYPE", "CREATED", "ARN"}, rows)
	}
	return writeJSON(env.Stdout, resp)
})

// ---- delete-stream

type deleteStreamOptions struct {
	Stream         streamRef
	CurrentVersion string
	Output         string // nothing is printed in any format: taken as the AWS CLI takes it
}

func (o deleteStreamOptions) validate() error {
	return cmp.Or(o.Stream.validate(), validateQuietOutput(o.Output))
}

func newDeleteStreamCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runDeleteStream, &cobra.Command{
		Use:   "delete-stream (--stream-arn ARN | --stream-name NAME) [--current-version V]",
		Short: "Delete a stream and all of its data",
		Long: `Delete a stream and all of its data (DeleteStream). The API takes only the ARN; as a
convenience the AWS CLI lacks, --stream-name looks the ARN up first. Without --current-version the
version is not checked. Prints nothing on success, like the AWS CLI.`,
	})
	addStreamRefFlags(c, &o.Stream)
	c.Flags().StringVar(&o.CurrentVersion, "current-version", "", "delete only if the stream still has this Version")
	addOutputFlag(c.Flags(), &o.Output)
	return c
}

var runDeleteStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o deleteStreamOptions) error {
	arn := o.Stream.ARN
	if arn == "" {
		out, err := cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: o.Stream.name()})
		if err != nil {
			return wrapAPI(err, "delete-stream %s", o.Stream)
		}
		arn = aws.ToString(out.StreamInfo.StreamARN)
	}
	_, err := cl.Control.DeleteStream(ctx, &kinesisvideo.DeleteStreamInput{StreamARN: aws.String(arn), CurrentVersion: optional(o.CurrentVersion)})
	if err != nil {
		return wrapAPI(err, "delete-stream %s", o.Stream)
	}
	env.Log.Info("stream deleted", "stream", o.Stream.String())
	return nil
})

// ---- update-data-retention

type updateDataRetentionOptions struct {
	Stream         streamRef
	CurrentVersion string
	Operation      string
	ChangeHours    int
	Output         string // nothing is printed in any format: taken as the AWS CLI takes it
}

func (o updateDataRetentionOptions) validate() error {
	return cmp.Or(o.Stream.validate(),
		oneOf("--operation", o.Operation, string(types.UpdateDataRetentionOperationIncreaseDataRetention),
			string(types.UpdateDataRetentionOperationDecreaseDataRetention)),
		inRange("--data-retention-change-in-hours", o.ChangeHours, 1, 87600), validateQuietOutput(o.Output))
}

func newUpdateDataRetentionCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runUpdateDataRetention, &cobra.Command{
		Use:   "update-data-retention (--stream-name NAME | --stream-arn ARN) --operation OP --data-retention-change-in-hours N [--current-version V]",
		Short: "Increase or decrease how long a stream keeps data",
		Long: `Increase or decrease a stream's data retention by a number of hours (UpdateDataRetention).
A decrease deletes data older than the new window. The API requires the stream's current Version;
when --current-version is omitted it is looked up first (a convenience the AWS CLI lacks), so the
change applies to whatever the stream's settings are now. Prints nothing on success.`,
	})
	addStreamRefFlags(c, &o.Stream)
	f := c.Flags()
	f.StringVar(&o.CurrentVersion, "current-version", "", "the stream's Version (default: looked up)")
	f.StringVar(&o.Operation, "operation", "", "INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION (required)")
	f.IntVar(&o.ChangeHours, "data-retention-change-in-hours", 0, "hours to add or remove (required)")
	addOutputFlag(f, &o.Output)
	return c
}

// currentVersion returns version, or when it is "" the stream's Version now (DescribeStream).
func currentVersion(ctx context.Context, cl *client.Client, stream streamRef, version, what string) (string, error) {
	if version != "" {
		return version, nil
	}
	out, err := cl.Control.DescribeStream(ctx, &kinesisvideo.DescribeStreamInput{StreamName: stream.name(), StreamARN: stream.arn()})
	if err != nil {
		return "", wrapAPI(err, "%s %s", what, stream)
	}
	return aws.ToString(out.StreamInfo.Version), nil
}

var runUpdateDataRetention = withClient(func(ctx context.Context, env *Env, cl *client.Client, o updateDataRetentionOptions) error {
	version, err := currentVersion(ctx, cl, o.Stream, o.CurrentVersion, "update-data-retention")
	if err != nil {
		return err
	}
	_, err = cl.Control.UpdateDataRetention(ctx, &kinesisvideo.UpdateDataRetentionInput{
		StreamName:                 o.Stream.name(),
		StreamARN:                  o.Stream.arn(),
		CurrentVersion:             aws.String(version),
		Operation:                  types.UpdateDataRetentionOperation(o.Operation),
		DataRetentionChangeInHours: aws.Int32(int32(o.ChangeHours)), //nolint:gosec // range-checked in validate
	})
	return wrapAPI(err, "update-data-retention %s", o.Stream)
})

// ---- update-stream

type updateStreamOptions struct {
	Stream         streamRef
	CurrentVersion string
	DeviceName     string
	MediaType      string
	Output         string // nothing is printed in any format: taken as the AWS CLI takes it
}

func (o updateStreamOptions) validate() error {
	return cmp.Or(o.Stream.validate(),
		errorIf(o.DeviceName == "" && o.MediaType == "", "--device-name or --media-type is required: they are what update-stream changes"), validateQuietOutput(o.Output))
}

func newUpdateStreamCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runUpdateStream, &cobra.Command{
		Use:   "update-stream (--stream-name NAME | --stream-arn ARN) [--device-name D] [--media-type T] [--current-version V]",
		Short: "Change a stream's device name or media type",
		Long: `Change a stream's device name or media type (UpdateStream); what is not given stays. The API
requires the stream's current Version; when --current-version is omitted it is looked up first (a
convenience the AWS CLI lacks). Prints nothing on success.`,
	})
	addStreamRefFlags(c, &o.Stream)
	f := c.Flags()
	f.StringVar(&o.CurrentVersion, "current-version", "", "the stream's Version (default: looked up)")
	f.StringVar(&o.DeviceName, "device-name", "", "the new device name")
	f.StringVar(&o.MediaType, "media-type", "", "the new media type, e.g. video/h264")
	addOutputFlag(f, &o.Output)
	return c
}

var runUpdateStream = withClient(func(ctx context.Context, env *Env, cl *client.Client, o updateStreamOptions) error {
	version, err := currentVersion(ctx, cl, o.Stream, o.CurrentVersion, "update-stream")
	if err != nil {
		return err
	}
	_, err = cl.Control.UpdateStream(ctx, &kinesisvideo.UpdateStreamInput{
		StreamName:     o.Stream.name(),
		StreamARN:      o.Stream.arn(),
		CurrentVersion: aws.String(version),
		DeviceName:     optional(o.DeviceName),
		MediaType:      optional(o.MediaType),
	})
	return wrapAPI(err, "update-stream %s", o.Stream)
})
