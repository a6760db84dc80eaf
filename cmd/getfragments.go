package cmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/piecewrite"
	"github.com/openkvs/kvs/mkv"
)

// maxBatch is the most fragments one GetMediaForFragmentList request asks for, and batchBytes
// the most bytes when ListFragments told the sizes (a batch holds at least one fragment). Batches
// are held in memory until written in order, so these (times --parallel, times two for the
// reorder window) bound memory. Small batches of big fragments also spread one stream's fragments
// over all the requests in flight instead of a few.
const (
	maxBatch    = 10
	batchBytes  = 4 << 20
	windowBytes = 32 << 20 // batches held when sizes are known: at least --parallel
)

type getFragmentsOptions struct {
	Stream          streamRef
	FragmentNumbers []string // "-" reads them from stdin
	NumbersGiven    bool     // --fragment-numbers was given, if with no number ("")
	Range           fragmentRange
	Parallel        int
	OutFile         string
	OutDir          string
	Format          string
}

func (o getFragmentsOptions) validate() error {
	if err := o.Stream.validate(); err != nil {
		return err
	}
	if o.numbersGiven() && (o.Range.Start != "" || o.Range.End != "") {
		return errors.New("give --fragment-numbers or --start/--end, not both")
	}
	if err := o.Range.validate(); err != nil {
		return err
	}
	if o.Parallel < 1 || o.Parallel > 64 {
		return fmt.Errorf("--parallel %d: want 1 to 64", o.Parallel)
	}
	if o.OutFile != "" && o.OutDir != "" {
		return errors.New("give -o FILE or --output-dir DIR, not both")
	}
	if o.Format != formatMKV && o.Format != formatRaw {
		return fmt.Errorf("--format %q: want mkv or raw", o.Format)
	}
	for _, n := range splitList(o.FragmentNumbers) {
		if n != "-" && strings.Trim(n, "0123456789") != "" {
			return fmt.Errorf("--fragment-numbers: %q is not a fragment number", n)
		}
	}
	return nil
}

func newGetFragmentsCmd(env *Env) *cobra.Command {
	c, o := newCommand(env, runGetFragments, &cobra.Command{
		Use:   "get-fragments --stream-name NAME [--fragment-numbers N,...|- | --start T --end T] [--parallel 4] [-o FILE | --output-dir DIR]",
		Short: "Download stored fragments with GetMediaForFragmentList",
		Long: `Download stored fragments with GetMediaForFragmentList, in batches fetched in parallel and written
in fragment-number order.

Selection: --fragment-numbers N,N,... (or - to read numbers, one per line, from standard input),
or --start/--end (as list-fragments), or nothing for the whole stream.

Output: one continuous Matroska stream (--format mkv, default) or the GetMedia chunk form with KVS
tags (--format raw), to stdout or -o FILE; or with --output-dir DIR one file per fragment, named
<fragment number>.mkv. A progress bar goes to stderr when it is a terminal.`,
	})
	f := c.Flags()
	addStreamRefFlags(c, &o.Stream)
	f.StringSliceVar(&o.FragmentNumbers, "fragment-numbers", nil, "fragment numbers (comma-separated, may repeat), or - for standard input")
	o.Range.addFlags(f, "earliest fragment start time", "latest fragment start time")
	run := c.RunE
	c.RunE = func(c *cobra.Command, args []string) error {
		o.NumbersGiven = c.Flags().Changed("fragment-numbers") // pflag reads "" as no values
		return run(c, args)
	}
	f.IntVar(&o.Parallel, "parallel", 4, "requests in flight")
	f.StringVarP(&o.OutFile, "output-file", "o", "", "write to this file instead of stdout")
	f.StringVar(&o.OutDir, "output-dir", "", "write one file per fragment into this directory")
	f.StringVar(&o.Format, "format", formatMKV, "mkv (one continuous Matroska stream) or raw (GetMedia chunks with KVS tags)")
	return c
}

// numbersGiven reports whether the selection is --fragment-numbers, not a time range.
func (o getFragmentsOptions) numbersGiven() bool { return o.NumbersGiven || len(o.FragmentNumbers) > 0 }

// fragmentNumbers resolves the selection to a sorted list of numbers, with their sizes when
// they come from ListFragments (sizes is nil for numbers given by the user).
func (o getFragmentsOptions) fragmentNumbers(ctx context.Context, env *Env, cl *client.Client) (list []string, sizes []int64, err error) {
	list = splitList(o.FragmentNumbers)
	if len(list) == 1 && list[0] == "-" {
		if isTerminal(env.Stdin) {
			return nil, nil, usageErrorf("--fragment-numbers -: standard input is a terminal; pipe the numbers in")
		}
		list = nil
		sc := bufio.NewScanner(env.Stdin)
		sc.Split(scanFragmentNumbers) // by number, not by line: one line may list thousands
		for sc.Scan() {
			n := sc.Text()
			if strings.Trim(n, "0123456789") != "" {
				return nil, nil, usageErrorf("standard input: %q is not a fragment number", n)
			}
			list = append(list, n)
		}
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("reading fragment numbers: %w", err)
		}
	} else {
		for _, n := range list {
			if n == "-" {
				return nil, nil, usageErrorf("--fragment-numbers: - must be the only value")
			}
		}
	}
	if o.numbersGiven() {
		// The numbers given are the selection, also when there are none (an empty
		// list-fragments --output numbers piped in, an empty shell variable): not the whole stream.
		// The help promises fragment-number order, and a number given twice is one fragment (a
		// repeat in one batch would also hand the writer the same, already released, fragment).
		slices.SortFunc(list, client.CompareFragmentNumbers)
		list = slices.CompactFunc(list, func(a, b string) bool { return client.CompareFragmentNumbers(a, b) == 0 })
		return list, nil, nil
	}
	frags, err := listFragments(ctx, cl, "get-fragments", o.Stream, o.Range)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range frags {
		list = append(list, f.FragmentNumber)
		sizes = append(sizes, f.SizeBytes)
	}
	return list, sizes, nil
}

// scanFragmentNumbers is a bufio.SplitFunc for fragment numbers separated by commas, blanks or
// line ends, in any mix (one per line as list-fragments --output numbers writes them, or a list
// joined on one line).
func scanFragmentNumbers(data []byte, atEOF bool) (advance int, token []byte, err error) {
	sep := func(b byte) bool { return b == ',' || b == ' ' || b == '\t' || b == '\n' || b == '\r' }
	start := 0
	for start < len(data) && sep(data[start]) {
		start++
	}
	for i := start; i < len(data); i++ {
		if sep(data[i]) {
			return i + 1, data[start:i], nil
		}
	}
	if atEOF && start < len(data) {
		return len(data), data[start:], nil
	}
	return start, nil, nil
}

func runGetFragments(ctx context.Context, env *Env, o getFragmentsOptions) error {
	if o.OutDir != "" { // validate allows -o FILE or --output-dir DIR, not both
		if err := checkOutputDir("--output-dir", o.OutDir); err != nil {
			return err
		}
	}
	cl, err := newDownloadClient(ctx, env, o.OutFile)
	if err != nil {
		return err
	}
	stream := o.Stream.String()
	numbers, sizes, err := o.fragmentNumbers(ctx, env, cl)
	if err != nil {
		return err
	}
	if len(numbers) == 0 {
		env.Log.Warn("no fragments selected", "stream", stream)
		if o.OutDir != "" {
			return nil
		}
		// -o FILE holds what was got, nothing, as after get-media: not an earlier run's media.
		return writeOutput(env, o.OutFile, "get-fragments "+stream, func(io.Writer) error { return nil })
	}

	// fetch gets the fragments in order, in batches fetched in parallel, and hands each to write.
	fetch := func(write func(*mkv.Fragment) error) error {
		bar := newProgress(env.Stderr, int64(len(numbers)), false, "get-fragments "+stream)
		batches := makeBatches(numbers, sizes, o.Parallel)
		window := 2 * o.Parallel
		if sizes != nil {
			// Memory held is what the process must fault in; on a 2-core machine 8 requests of 5 MB
			// fragments with a window of 16 ran slower than 2 requests did.
			var total int64
			for _, sz := range sizes {
				total += sz
			}
			if avg := total / int64(len(batches)); avg > 0 {
				window = max(o.Parallel, min(window, int(windowBytes/avg)))
			}
		}
		fetchBatch := withRetry(func(ctx context.Context, numbers []string) ([]*mkv.Fragment, error) {
			return fetchBatch(ctx, cl, stream, numbers)
		})
		err := fetchInOrder(ctx, batches, o.Parallel, window, fetchBatch, func(frags []*mkv.Fragment) error {
			for _, f := range frags {
				if err := write(f); err != nil {
					return fmt.Errorf("writing: %w", err)
				}
				f.Release() // written: its memory serves a later fragment
				bar.add(1)
			}
			return nil
		})
		bar.finish()
		return wrapAPI(err, "get-fragments %s", stream)
	}
	if o.OutDir == "" && o.Format == formatRaw {
		// The chunks as the server sent them: nothing to parse or re-encode (rawchunks.go).
		size := map[string]int64{}
		for i, n := range numbers {
			if sizes != nil {
				size[n] = sizes[i]
			}
		}
		inOrder := func(w io.Writer) error {
			bar := newProgress(env.Stderr, int64(len(numbers)), false, "get-fragments "+stream)
			batches := makeBatches(numbers, sizes, o.Parallel)
			fetch := withRetry(func(ctx context.Context, numbers []string) (rawBatch, error) {
				var expect int64
				for _, n := range numbers {
					expect += size[n]
				}
				return fetchRawBatch(ctx, cl, stream, numbers, int(expect))
			})
			err := fetchInOrder(ctx, batches, o.Parallel, o.Parallel+1, fetch, func(b rawBatch) error {
				defer bufpool.Put(b.buf)
				for _, c := range b.chunks {
					if _, err := w.Write(c); err != nil {
						return fmt.Errorf("writing: %w", err)
					}
					bar.add(1)
				}
				return nil
			})
			bar.finish()
			return wrapAPI(err, "get-fragments %s", stream)
		}
		if o.OutFile == "" || o.OutFile == "-" {
			return writeOutput(env, o.OutFile, "get-fragments "+stream, inOrder)
		}
		return writeOutputFile(env, o.OutFile, "get-fragments "+stream, func(f *os.File) error {
			if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() { // -o /dev/null, a FIFO
				return inOrder(piecewrite.Writer{W: f})
			}
			// A regular file: each answer written at its place by its request (rawfile.go).
			bar := newProgress(env.Stderr, int64(len(numbers)), false, "get-fragments "+stream)
			err := fetchRawToFile(ctx, cl, stream, makeBatches(numbers, sizes, o.Parallel), o.Parallel, f, func(n int) { bar.add(int64(n)) })
			bar.finish()
			return wrapAPI(err, "get-fragments %s", stream)
		})
	}
	if o.OutDir == "" {
		return writeOutput(env, o.OutFile, "get-fragments "+stream, func(w io.Writer) error {
			s := newFragmentSink(w, o.Format)
			if err := fetch(s.write); err != nil {
				return err
			}
			return s.close()
		})
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return fmt.Errorf("get-fragments %s: --output-dir: %w", stream, err)
	}
	return fetch(func(f *mkv.Fragment) error { // one file per fragment
		num, _ := f.Tag(mkv.TagFragmentNumber)
		fh, err := os.Create(filepath.Join(o.OutDir, num+".mkv"))
		if err != nil {
			return err
		}
		if err := newFragmentSink(fh, o.Format).write(f); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	})
}

// makeBatches splits numbers into GetMediaForFragmentList requests: an even share per request
// in flight, at most maxBatch fragments, and, when sizes are known, at most batchBytes (at least
// one fragment).
func makeBatches(numbers []string, sizes []int64, parallel int) [][]string {
	limit := min(max((len(numbers)+parallel-1)/parallel, 1), maxBatch)
	var batches [][]string
	start, bytes := 0, int64(0)
	for i := range numbers {
		if i > start && (i-start == limit || (sizes != nil && bytes+sizes[i] > batchBytes)) {
			batches = append(batches, numbers[start:i])
			start, bytes = i, 0
		}
		if sizes != nil {
			bytes += sizes[i]
		}
	}
	if start < len(numbers) {
		batches = append(batches, numbers[start:])
	}
	return batches
}

// fetchInOrder fetches batches with up to parallel GetMediaForFragmentList requests (fetch) and
// calls emit for every batch in order. At most window batches are held (fetched or being fetched,
// not yet written).
func fetchInOrder[T any](ctx context.Context, batches [][]string, parallel, window int,
	fetch func(context.Context, []string) (T, error), emit func(T) error) error {
	results := make([]chan T, len(batches))
	for i := range results {
		results[i] = make(chan T, 1)
	}
	held := make(chan struct{}, window) // batches held, released when written
	jobs := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // feeder
		defer close(jobs)
		for i := range batches {
			select {
			case held <- struct{}{}:
			case <-gctx.Done():
				return nil
			}
			select {
			case jobs <- i:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range parallel {
		g.Go(func() error {
			for i := range jobs {
				b, err := fetch(gctx, batches[i])
				if err != nil {
					return err
				}
				results[i] <- b
			}
			return nil
		})
	}
	g.Go(func() error { // writer, in order
		for i := range batches {
			var b T
			select {
			case b = <-results[i]:
			case <-gctx.Done():
				return nil
			}
			if err := emit(b); err != nil {
				return err
			}
			<-held
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// batchAttempts is how often a GetMediaForFragmentList batch is tried when the server answers
// with a retryable error (5xx, throttling), as the SDK's retryer does for the other calls.
const batchAttempts = 3

// withRetry retries fetch on a retryable *client.APIError, with a short backoff. A batch is only
// handed on whole, so a retry cannot duplicate or lose fragments.
func withRetry[T any](fetch func(context.Context, []string) (T, error)) func(context.Context, []string) (T, error) {
	return func(ctx context.Context, numbers []string) (T, error) {
		for attempt := 1; ; attempt++ {
			v, err := fetch(ctx, numbers)
			var ae *client.APIError
			if err == nil || attempt == batchAttempts || ctx.Err() != nil || !errors.As(err, &ae) || !ae.Retryable() {
				return v, err
			}
			select {
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			case <-ctx.Done():
				return v, ctx.Err()
			}
		}
	}
}

// fetchBatch gets numbers with one request and checks that each comes back once, in order.
func fetchBatch(ctx context.Context, cl *client.Client, stream string, numbers []string) ([]*mkv.Fragment, error) {
	body, err := cl.GetMediaForFragmentList(ctx, stream, numbers)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	answer := newBatchAnswer[*mkv.Fragment](numbers)
	fr := mkv.NewFragmentReader(body)
	for {
		f, err := fr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading fragments: %w", err)
		}
		if ce := client.ChunkErrorOf(f); ce != nil {
			return nil, ce
		}
		if len(f.Frames) == 0 {
			continue
		}
		num, _ := f.Tag(mkv.TagFragmentNumber)
		if err := answer.add(num, f); err != nil {
			return nil, err
		}
	}
	return answer.inOrder(numbers)
}
