package cmd

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openkvs/kvs/client"
)

const outputNumbers = "numbers"

type listFragmentsOptions struct {
	Stream streamRef
	Range  fragmentRange
	Output string
}

func (o listFragmentsOptions) validate() error {
	return cmp.Or(o.Stream.validate(), o.Range.validate(), validateOutput(o.Output, outputJSON, outputText, outputTable, outputNumbers))
}

func newListFragmentsCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runListFragments, &cobra.Command{
		Use:   "list-fragments --stream-name NAME [--start T] [--end T] [--timestamp-type server|producer] [--output json|table|numbers]",
		Short: "List a stream's fragments in a time range",
		Long: `List a stream's fragments (ListFragments, all pages), sorted by fragment number.

--start and --end select on the fragment start time, both inclusive; either may be left out.
Times are RFC 3339 (UTC when no zone is given), Unix seconds (1705489836.421) or relative to now
(now, -10m, -1h30m).

--output json prints {"Fragments":[...]} with the KVS member names (times as RFC 3339 UTC);
text prints what the AWS CLI's --output text prints (a FRAGMENTS line a fragment: length in ms,
number, size, producer and server time, tab-separated); table is for people; numbers prints one fragment number per line, for
  kvs list-fragments --stream-name cam --output numbers | kvs get-fragments --stream-name cam --fragment-numbers -`,
	})
	addStreamRefFlags(c, &o.Stream)
	o.Range.addFlags(c.Flags(), "earliest fragment start time (default: the beginning)", "latest fragment start time (default: now and later)")
	c.Flags().StringVar(&o.Output, "output", outputJSON, "json, text (as the AWS CLI's), table or numbers")
	return c
}

// fragmentOutput is one ListFragments entry as printed.
type fragmentOutput struct {
	FragmentNumber               string `json:"FragmentNumber"`
	FragmentSizeInBytes          int64  `json:"FragmentSizeInBytes"`
	ProducerTimestamp            string `json:"ProducerTimestamp"`
	ServerTimestamp              string `json:"ServerTimestamp"`
	FragmentLengthInMilliseconds int64  `json:"FragmentLengthInMilliseconds"`
}

// listFragments runs ListFragments for the stream and range; cmd names the command in errors.
func listFragments(ctx context.Context, cl *client.Client, cmd string, stream streamRef, r fragmentRange) ([]client.FragmentInfo, error) {
	from, to, tt, err := r.resolve(time.Now())
	if err != nil {
		return nil, usageError{err}
	}
	frags, err := cl.ListFragments(ctx, client.ListFragmentsInput{Stream: stream.String(), Start: from, End: to, Type: tt})
	if err != nil {
		return nil, wrapAPI(err, "%s %s", cmd, stream)
	}
	return frags, nil
}

var runListFragments = withClient(func(ctx context.Context, env *Env, cl *client.Client, o listFragmentsOptions) error {
	frags, err := listFragments(ctx, cl, "list-fragments", o.Stream, o.Range)
	if err != nil {
		return err
	}
	switch o.Output {
	case outputNumbers:
		var b strings.Builder
		for _, f := range frags {
			b.WriteString(f.FragmentNumber)
			b.WriteByte('\n')
		}
		_, err := fmt.Fprint(env.Stdout, b.String())
		return err
	case outputText:
		// As `aws kinesis-video-archived-media list-fragments --output text` prints it, in
		// fragment number order.
		l := make([]any, 0, len(frags))
		for _, f := range frags {
			l = append(l, map[string]any{
				"FragmentNumber":               f.FragmentNumber,
				"FragmentSizeInBytes":          strconv.FormatInt(f.SizeBytes, 10),
				"ProducerTimestamp":            textTime(f.ProducerTimestamp),
				"ServerTimestamp":              textTime(f.ServerTimestamp),
				"FragmentLengthInMilliseconds": strconv.FormatInt(f.Length.Milliseconds(), 10),
			})
		}
		return writeText(env.Stdout, map[string]any{"Fragments": l})
	case outputTable:
		rows := make([][]string, 0, len(frags))
		for _, f := range frags {
			rows = append(rows, []string{f.FragmentNumber, formatTime(f.ProducerTimestamp), formatTime(f.ServerTimestamp),
				strconv.FormatInt(f.Length.Milliseconds(), 10), strconv.FormatInt(f.SizeBytes, 10)})
		}
		return writeTable(env.Stdout, []string{"FRAGMENT", "PRODUCER TIME", "SERVER TIME", "LENGTH MS", "BYTES"}, rows)
	}
	out := struct {
		Fragments []fragmentOutput `json:"Fragments"`
	}{Fragments: make([]fragmentOutput, 0, len(frags))}
	for _, f := range frags {
		out.Fragments = append(out.Fragments, fragmentOutput{
			FragmentNumber:               f.FragmentNumber,
			FragmentSizeInBytes:          f.SizeBytes,
			ProducerTimestamp:            formatTime(f.ProducerTimestamp),
			ServerTimestamp:              formatTime(f.ServerTimestamp),
			FragmentLengthInMilliseconds: f.Length.Milliseconds(),
		})
	}
	return writeJSON(env.Stdout, out)
})
