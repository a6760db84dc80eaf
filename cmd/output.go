package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/openkvs/kvs/internal/piecewrite"
	"github.com/spf13/pflag"
)

// Output formats of the client commands. JSON is the default because stdout is data: it is shaped
// like the AWS CLI's output for the same operation (same member names and nesting), so scripts
// written for `aws kinesisvideo` read it unchanged. Text is the AWS CLI's text format, byte for
// byte (textoutput.go). Tables are for people.
const (
	outputJSON  = "json"
	outputText  = "text"
	outputTable = "table"
)

// addOutputFlag registers --output on fs, filling *p (default json).
func addOutputFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "output", outputJSON, "output format: json, text (as the AWS CLI's) or table")
}

// validateOutput checks an --output value against the allowed formats (json, text and table when
// none are given).
func validateOutput(v string, allowed ...string) error {
	if len(allowed) == 0 {
		allowed = []string{outputJSON, outputText, outputTable}
	}
	return oneOf("--output", v, allowed...)
}

// validateQuietOutput is validateOutput for a command that prints nothing, in any format: it takes
// --output as the AWS CLI takes it on every command, so that a script that gives it everywhere
// works. "" (a run function's caller that sets none) is fine.
func validateQuietOutput(v string) error {
	if v == "" {
		return nil
	}
	return validateOutput(v)
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

// writeOutput calls write with -o FILE (opened first, closed after) or, for "" and "-", stdout.
// It returns write's error, else the file's Close error; its own errors (creating or closing the
// file) start with what, e.g. "get-clip cam".
func writeOutput(env *Env, path, what string, write func(io.Writer) error) error {
	if path == "" || path == "-" {
		return write(piecewrite.Writer{W: env.Stdout}) // get-fragments writes a fragment with one Write
	}
	return writeOutputFile(env, path, what, func(f *outputFile) error { return write(piecewrite.Writer{W: f}) })
}

// outputFile is -o FILE while a command writes it. It is opened without truncating it: what an
// earlier run left there goes at the first byte written (begin), so that a download that fails
// before it (a misspelt stream name, a fragment that does not exist, Ctrl-C while waiting for a
// live stream) leaves an existing file as it was. Write is for writing from the start, in order;
// a writer that places bytes at offsets itself (rawfile.go) calls begin before its first.
type outputFile struct {
	File    *os.File // not embedded: its ReadFrom would write around begin
	once    sync.Once
	err     error
	started atomic.Bool
}

// begin empties the file, once, before the first byte of this run goes in; it is safe for
// concurrent use. A FIFO or a device (-o /dev/null) is left alone.
func (f *outputFile) begin() error {
	f.once.Do(func() {
		f.started.Store(true)
		if fi, err := f.File.Stat(); err == nil && fi.Mode().IsRegular() {
			f.err = f.File.Truncate(0)
		}
	})
	return f.err
}

func (f *outputFile) Write(b []byte) (int, error) {
	if err := f.begin(); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}

// writeOutputFile is writeOutput to the file path, created if missing; what write does not write
// of an earlier file goes when it succeeds (an empty result leaves an empty file).
func writeOutputFile(env *Env, path, what string, write func(*outputFile) error) error {
	_, serr := os.Stat(path)
	existed := serr == nil
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666) // as os.Create, without O_TRUNC: rawfile.go maps it
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	f := &outputFile{File: fh}
	err = write(f)
	if err == nil {
		err = f.begin() // a success that wrote nothing: the file holds nothing, not the earlier run's
	}
	if cerr := fh.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("%s: %w", what, cerr)
	}
	if err == nil {
		return nil
	}
	if !f.started.Load() {
		// Nothing of this run went in: an earlier file stays as it was, one made here goes.
		if !existed {
			_ = os.Remove(path)
		}
		return err
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
	case isNotFound(err):
		// The stream (deleted) or a fragment (expired) is gone: running again gets no more.
		err = withHint(err, fmt.Sprintf("%s holds only the %d bytes written before the failure.", path, size))
	default:
		err = withHint(err, fmt.Sprintf("%s is incomplete (%d bytes written before the failure); run the command again to get all of it.", path, size))
	}
	return err
}
