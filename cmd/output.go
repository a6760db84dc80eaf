package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/openkvs/kvs/internal/piecewrite"
	"github.com/spf13/pflag"
)

// Output formats of the client commands. JSON is the default because stdout is data: it is shaped
// like the AWS CLI's output for the same operation (same member names and nesting), so scripts
// written for `aws kinesisvideo` read it unchanged. Tables are for people.
const (
	outputJSON  = "json"
	outputTable = "table"
)

// addOutputFlag registers --output on fs, filling *p (default json).
func addOutputFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "output", outputJSON, "output format: json or table")
}

// validateOutput checks an --output value against the allowed formats (json and table when none
// are given).
func validateOutput(v string, allowed ...string) error {
	if len(allowed) == 0 {
		allowed = []string{outputJSON, outputTable}
	}
	return oneOf("--output", v, allowed...)
}

// writeJSON prints v as indented JSON (4 spaces, like the AWS CLI) with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeTable prints rows under header in aligned columns separated by two spaces. Empty cells
// print as "-" so that every row has the same number of fields for awk and friends.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			if c == "" {
				c = "-"
			}
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprint(tw, "\n")
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

// formatTime prints a timestamp for output: RFC 3339 in UTC with milliseconds
// ("2024-01-17T11:10:36.421Z"). The AWS CLI prints ISO 8601 with the local offset by default; UTC
// keeps the output stable across machines, and both parse with any ISO 8601 reader. The zero time
// prints as "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// writeOutput calls write with -o FILE (created first, closed after) or, for "" and "-", stdout.
// It returns write's error, else the file's Close error; its own errors (creating or closing the
// file) start with what, e.g. "get-clip cam".
func writeOutput(env *Env, path, what string, write func(io.Writer) error) error {
	if path == "" || path == "-" {
		return write(piecewrite.Writer{W: env.Stdout}) // get-fragments writes a fragment with one Write
	}
	return writeOutputFile(env, path, what, func(f *os.File) error { return write(piecewrite.Writer{W: f}) })
}

// writeOutputFile is writeOutput to the file path, created (or truncated) for write.
func writeOutputFile(env *Env, path, what string, write func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err = write(f)
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("%s: %w", what, cerr)
	}
	if err == nil {
		return nil
	}
	// Never leave a failed or interrupted download looking like a finished one: an empty file
	// goes, a partial one is named as such. Only a regular file: -o /dev/null or a FIFO stays.
	fi, serr := os.Stat(path) // f is closed
	if serr != nil || !fi.Mode().IsRegular() {
		return err
	}
	size := fi.Size()
	switch {
	case size == 0:
		_ = os.Remove(path)
	case errors.Is(err, context.Canceled):
		// Run prints nothing for an interrupt (exit 130): say what the file holds here.
		fmt.Fprintf(env.Stderr, "kvs: %s: interrupted: %s holds only the %d bytes written before\n", what, path, size)
	default:
		err = withHint(err, fmt.Sprintf("%s is incomplete (%d bytes written before the failure); run the command again to get all of it.", path, size))
	}
	return err
}
