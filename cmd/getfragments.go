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
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/piecewrite"
	"github.com/openkvs/kvs/mkv"
)

// maxBatch is the most fragments one GetMediaForFragmentList request asks for, and batchBytes
// the most bytes (a batch holds at least one fragment), by the sizes ListFragments told or, for
// fragment numbers given, the sizes the answers showed (batchPlan). Batches are held in memory
// until written in order: windowBytes bounds what is held beyond --parallel batches. Small
// batches of big fragments also spread one stream's fragments over all the requests in flight
// instead of a few.
const (
	maxBatch    = 10
	batchBytes  = 4 << 20
	windowBytes = 32 << 20 // bytes of batches held, when more than --parallel batches are
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

// noneSelected says, when no fragment was selected, where get-fragments looked and what to do.
func (o getFragmentsOptions) noneSelected() string {
	r := o.Range
	switch {
	case o.NumbersGiven && slices.Equal(splitList(o.FragmentNumbers), []string{"-"}):
		return fmt.Sprintf("no fragments selected: standard input (--fragment-numbers -) held no fragment number; `kvs list-fragments %s --output table` lists the stream's fragments and their times",
			o.Stream.flag())
	case o.NumbersGiven:
		return fmt.Sprintf("no fragments selected: --fragment-numbers gave no number; `kvs list-fragments %s --output numbers` prints the stream's fragment numbers",
			o.Stream.flag())
	case r.Start == "" && r.End == "":
		return "no fragments selected: the stream has no fragments (none put, or all older than its retention); put-media puts media into it"
	}
	span := ""
	if r.Start != "" {
		span += " from " + r.Start
	}
	if r.End != "" {
		span += " to " + r.End
	}
	typ := "server" // --timestamp-type's default; validate checked it
	if t, _ := parseTimestampType(r.TimestampType); t == client.ProducerTimestamp {
		typ = "producer"
	}
	return fmt.Sprintf("no fragments selected: the stream has none with a %s timestamp%s; `kvs list-fragments %s --output table` lists its fragments and their times",
		typ, span, o.Stream.flag())
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
		env.Log.Warn(o.noneSelected(), "stream", stream)
		if o.OutDir != "" {
			return nil
		}
		// -o FILE holds what was got, nothing, as after get-media: not an earlier run's media.
		return writeOutput(env, o.OutFile, "get-fragments "+stream, func(io.Writer) error { return nil })
	}

	// fetch gets the fragments in order, in batches fetched in parallel, and hands each to write.
	fetch := func(write func(*mkv.Fragment) error) error {
		bar := newProgress(env.Stderr, int64(len(numbers)), false, "get-fragments "+stream)
		fetchBatch := func(ctx context.Context, numbers []string, size func(int64)) ([]*mkv.Fragment, error) {
			return withRetry(func(ctx context.Context, numbers []string) ([]*mkv.Fragment, error) {
				return fetchBatch(ctx, cl, stream, numbers, size)
			})(ctx, numbers)
		}
		err := fetchInOrder(ctx, numbers, sizes, o.Parallel, 2*o.Parallel, fetchBatch, func(frags []*mkv.Fragment) error {
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
			fetch := func(ctx context.Context, numbers []string, length func(int64)) (rawBatch, error) {
				var expect int64
				for _, n := range numbers {
					expect += size[n]
				}
				return withRetry(func(ctx context.Context, numbers []string) (rawBatch, error) {
					return fetchRawBatch(ctx, cl, stream, numbers, int(expect), length)
				})(ctx, numbers)
			}
			err := fetchInOrder(ctx, numbers, sizes, o.Parallel, o.Parallel+1, fetch, func(b rawBatch) error {
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
		return writeOutputFile(env, o.OutFile, "get-fragments "+stream, func(f *outputFile) error {
			if fi, err := f.File.Stat(); err != nil || !fi.Mode().IsRegular() { // -o /dev/null, a FIFO
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
			s := newFragmentSink(w, o.Format).warnTrackChanges(env, "get-fragments", o.Stream)
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
	limit := batchLimit(len(numbers), parallel)
	var batches [][]string
	for start := 0; start < len(numbers); {
		end, _ := knownBatchEnd(numbers, sizes, start, limit)
		batches = append(batches, numbers[start:end])
		start = end
	}
	return batches
}

// batchLimit is the most fragments a batch of n holds: an even share per request in flight, at
// most maxBatch.
func batchLimit(n, parallel int) int { return min(max((n+parallel-1)/parallel, 1), maxBatch) }

// knownBatchEnd returns where the batch that starts at numbers[start] ends: after limit
// fragments or, when sizes are known, before batchBytes are passed (at least one fragment); and
// its size in bytes (0 when sizes are unknown).
func knownBatchEnd(numbers []string, sizes []int64, start, limit int) (end int, bytes int64) {
	end = start
	for end < len(numbers) && end-start < limit {
		if sizes != nil {
			if end > start && bytes+sizes[end] > batchBytes {
				break
			}
			bytes += sizes[end]
		}
		end++
	}
	return end, bytes
}

// heldBatch is one GetMediaForFragmentList request of fetchInOrder, from when it is cut until
// its answer is written.
type heldBatch struct {
	numbers []string
	bytes   int64 // counted in batchPlan.held: its answer's length once known, until then an estimate
}

// batchPlan cuts fragment numbers into GetMediaForFragmentList requests as they are fetched, and
// bounds what is held: the answers fetched or being fetched and not yet written. The sizes come
// from ListFragments, or, for numbers given without them, are learned from the answers: the
// first request asks for one fragment and the next wait for its length (kvs sends a
// Content-Length; without one, the answer's end), and each batch after holds as many fragments as
// batchBytes allows at the biggest fragment seen so far. Either way the answers held stay near
// windowBytes, or --parallel batches of one fragment when fragments are bigger than a batch. A
// stream whose fragments grow after the first answers can hold more until its bigger answers
// arrive (the batches cut at the old size, window of them at most). Safe for concurrent use.
type batchPlan struct {
	numbers  []string
	sizes    []int64 // nil: unknown
	parallel int
	window   int           // the most batches held, at least parallel
	limit    int           // batchLimit
	changed  chan struct{} // 1 slot: what is held, or the size learned, changed

	mu       sync.Mutex
	next     int   // the first number not yet in a batch
	held     int64 // bytes of the batches held
	batches  int   // batches held
	fragSize int64 // bytes: the largest fragment an answer showed (its length over its fragments); 0: none yet
}

func newBatchPlan(numbers []string, sizes []int64, parallel, window int) *batchPlan {
	return &batchPlan{numbers: numbers, sizes: sizes, parallel: parallel, window: window, limit: batchLimit(len(numbers), parallel),
		changed: make(chan struct{}, 1)}
}

// take returns the next batch once there is room to hold it; false when every number is in a
// batch or ctx is done.
func (p *batchPlan) take(ctx context.Context) (*heldBatch, bool) {
	for {
		if b, done := p.tryTake(); b != nil || done {
			return b, b != nil
		}
		select {
		case <-p.changed:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (p *batchPlan) tryTake() (b *heldBatch, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == len(p.numbers) {
		return nil, true
	}
	end, bytes := knownBatchEnd(p.numbers, p.sizes, p.next, p.limit)
	if p.sizes == nil {
		if p.fragSize == 0 && p.batches > 0 {
			return nil, false // the first answer's length tells how big the next may be
		}
		n := 1
		if p.fragSize > 0 {
			n = int(min(max(batchBytes/p.fragSize, 1), int64(p.limit)))
		}
		end = min(p.next+n, len(p.numbers))
		bytes = int64(end-p.next) * p.fragSize
	}
	// Requests in flight first, up to --parallel; more, to window, while the bytes held allow.
	if p.batches > 0 && (p.batches >= p.window || p.batches >= p.parallel && p.held+bytes > windowBytes) {
		return nil, false
	}
	b = &heldBatch{numbers: p.numbers[p.next:end], bytes: bytes}
	p.next = end
	p.held += bytes
	p.batches++
	return b, false
}

// learn records that b's answer is n bytes long (again, if it is retried).
func (p *batchPlan) learn(b *heldBatch, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held += n - b.bytes
	b.bytes = n
	if p.sizes == nil {
		p.fragSize = max(p.fragSize, (n+int64(len(b.numbers))-1)/int64(len(b.numbers)), 1)
	}
	p.wake()
}

// release records that b's answer was written.
func (p *batchPlan) release(b *heldBatch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held -= b.bytes
	p.batches--
	p.wake()
}

func (p *batchPlan) wake() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// fetchInOrder fetches numbers (with their sizes, or nil) in batches, with up to parallel
// GetMediaForFragmentList requests (fetch), and calls emit for every batch in order. What is
// held (batches fetched or being fetched, not yet written) is at most window batches (at least
// parallel), and bounded in bytes as batchPlan tells; fetch
// calls its size argument with the answer's length in bytes as soon as it knows it (again on a
// retry).
func fetchInOrder[T any](ctx context.Context, numbers []string, sizes []int64, parallel, window int,
	fetch func(ctx context.Context, numbers []string, size func(int64)) (T, error), emit func(T) error) error {
	type job struct {
		batch  *heldBatch
		result chan T
	}
	plan := newBatchPlan(numbers, sizes, parallel, window)
	order := make(chan job, window) // never full: at most window batches are held
	jobs := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // feeder
		defer close(jobs)
		defer close(order)
		for {
			b, ok := plan.take(gctx)
			if !ok {
				return nil
			}
			j := job{b, make(chan T, 1)}
			select {
			case order <- j:
			case <-gctx.Done():
				return nil
			}
			select {
			case jobs <- j:
			case <-gctx.Done():
				return nil
			}
		}
	})
	for range parallel {
		g.Go(func() error {
			for j := range jobs {
				v, err := fetch(gctx, j.batch.numbers, func(n int64) { plan.learn(j.batch, n) })
				if err != nil {
					return err
				}
				j.result <- v
			}
			return nil
		})
	}
	g.Go(func() error { // writer, in order
		for j := range order {
			var v T
			select {
			case v = <-j.result:
			case <-gctx.Done():
				return nil
			}
			if err := emit(v); err != nil {
				return err
			}
			plan.release(j.batch)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// fetchBatch gets numbers with one request and checks that each comes back once, in order. It
// calls size with the answer's length: its Content-Length, or the bytes read when it has none.
func fetchBatch(ctx context.Context, cl *client.Client, stream string, numbers []string, size func(int64)) ([]*mkv.Fragment, error) {
	body, err := cl.GetMediaForFragmentList(ctx, stream, numbers)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	r := &countedReader{r: answerReader(body)}
	if body.Length >= 0 {
		size(body.Length)
	} else {
		defer func() { size(r.n) }()
	}
	answer := newBatchAnswer[*mkv.Fragment](numbers)
	fr := mkv.NewFragmentReader(r)
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

// testAnswerRead, set by a test (which then does not run in parallel), is told the bytes read of
// every GetMediaForFragmentList answer the in-order paths read.
var testAnswerRead func(n int)

// answerReader is body, counted for testAnswerRead when a test set it.
func answerReader(body io.Reader) io.Reader {
	if testAnswerRead == nil {
		return body
	}
	return &countedReader{r: body, read: testAnswerRead}
}

// countedReader counts the bytes read from r, and tells read (when set) of each read.
type countedReader struct {
	r    io.Reader
	n    int64
	read func(int)
}

func (c *countedReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.read != nil {
		c.read(n)
	}
	return n, err
}
