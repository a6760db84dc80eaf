package cmd

// get-fragments --format raw -o FILE, to a regular file: each GetMediaForFragmentList answer is
// written straight to its place in the file as it arrives, by the request that fetched it, so the
// requests in flight write in parallel and nothing of the media is held in memory.
// An answer's place is known once the lengths of the answers before it are: kvs gives every answer
// a Content-Length (server/archive.go), which arrives with its headers; an answer without one (an
// older kvs, AWS) is read into memory first, as the in-order path does (fetchRawBatch), and
// written once its place is known. With a kvs server over plain HTTP the bytes pass through user
// space at neither end: the server sends stored payloads with sendfile(2) and each request splices
// its answer from the socket into the file through a descriptor of its own
// (client.GetMediaForFragmentListForFile, MediaBody.WriteToFile). Each answer is checked once
// written, in the file's page cache (mapped, not read again: mapRegion), as the in-order path
// checks it in memory: every fragment asked for, once, in order, and no error chunk.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/internal/mapped"
)

// rawFile places the answers of batches, fetched in parallel, in f.
type rawFile struct {
	f       *outputFile
	batches [][]string
	lengths []int64         // each answer's length, set before its known channel closes
	known   []chan struct{} // closed when lengths[i] is set
	offsets []int64         // where each answer goes, set before its placed channel closes
	placed  []chan struct{}
	done    []bool // answers written and checked (by their request; read when all have ended)

	mu      sync.Mutex
	ctxs    []context.Context // each started answer's
	cancels []context.CancelFunc
	failed  int   // the first answer that failed (len(batches): none)
	err     error // its error
}

// fetchRawToFile gets batches with up to parallel GetMediaForFragmentList requests into f, each
// answer at its place, and calls progress with the number of fragments of each answer written and
// checked. When one fails, the requests for the answers after it stop and those before it finish,
// so f then holds every answer before the first that failed, whole, and nothing after them; the
// error is that answer's.
func fetchRawToFile(ctx context.Context, cl *client.Client, stream string, batches [][]string, parallel int, f *outputFile, progress func(int)) error {
	rf := &rawFile{f: f, batches: batches, lengths: make([]int64, len(batches)), known: make([]chan struct{}, len(batches)),
		offsets: make([]int64, len(batches)+1), placed: make([]chan struct{}, len(batches)+1), done: make([]bool, len(batches)),
		ctxs: make([]context.Context, len(batches)), cancels: make([]context.CancelFunc, len(batches)), failed: len(batches),
	}
	for i := range batches {
		rf.known[i] = make(chan struct{})
		rf.placed[i] = make(chan struct{})
	}
	rf.placed[len(batches)] = make(chan struct{})
	close(rf.placed[0]) // the first answer goes at 0
	abort := make(chan struct{})
	placesDone := make(chan struct{})
	go func() { // the places: each answer's offset once the lengths before it are known
		defer close(placesDone)
		for i := range batches {
			select {
			case <-rf.known[i]:
			case <-abort:
				return
			}
			rf.offsets[i+1] = rf.offsets[i] + rf.lengths[i]
			close(rf.placed[i+1])
		}
	}()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			wf, err := os.OpenFile(f.File.Name(), os.O_WRONLY, 0)
			if err == nil {
				defer wf.Close()
			}
			for i := range jobs {
				bctx, ok := rf.context(i)
				if !ok {
					continue // after a failed answer
				}
				fetch := withRetry(func(ctx context.Context, _ []string) (struct{}, error) {
					if err != nil { // the file could not be opened again
						return struct{}{}, err
					}
					return struct{}{}, rf.fetch(ctx, cl, stream, i, wf)
				})
				_, err := fetch(bctx, batches[i])
				rf.cancels[i]() // set before i was sent
				if err != nil {
					rf.fail(i, err)
					continue
				}
				rf.done[i] = true
				progress(len(batches[i]))
			}
		})
	}
	for i := range batches { // in order: an answer's place never waits for a later one
		if !rf.start(ctx, i) {
			break
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			rf.fail(i, ctx.Err())
		}
	}
	close(jobs)
	wg.Wait()
	close(abort)
	<-placesDone
	if rf.err == nil {
		return f.File.Truncate(rf.offsets[len(batches)]) // the end: nothing of an earlier file stays
	}
	if !f.started.Load() {
		return rf.err // nothing written: an earlier file stays as it was (writeOutputFile)
	}
	end := int64(0)
	for i := 0; i < len(batches) && rf.done[i]; i++ {
		end = rf.offsets[i] + rf.lengths[i]
	}
	return errors.Join(rf.err, f.File.Truncate(end))
}

// start makes answer i's context, unless an earlier answer failed.
func (rf *rawFile) start(ctx context.Context, i int) bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.failed < i {
		return false
	}
	rf.ctxs[i], rf.cancels[i] = context.WithCancel(ctx)
	return true
}

// context returns answer i's context, unless an earlier answer failed.
func (rf *rawFile) context(i int) (context.Context, bool) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.ctxs[i], rf.failed > i
}

// fail records that answer i failed with err, and stops the requests for the answers after the
// first that failed.
func (rf *rawFile) fail(i int, err error) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if i < rf.failed {
		rf.failed, rf.err = i, err
	}
	for j := rf.failed + 1; j < len(rf.cancels) && rf.cancels[j] != nil; j++ {
		rf.cancels[j]()
	}
}

// fetch gets batch i, writes its answer at its place through wf, this request's own descriptor
// of the file (WriteToFile writes at the descriptor's offset), and checks it there.
func (rf *rawFile) fetch(ctx context.Context, cl *client.Client, stream string, i int, wf *os.File) error {
	numbers := rf.batches[i]
	body, err := cl.GetMediaForFragmentListForFile(ctx, stream, numbers)
	if err != nil {
		return err
	}
	defer body.Close()
	var whole []byte // an answer without a length, read into memory
	defer func() { bufpool.Put(whole) }()
	length := body.Length
	if length < 0 {
		if whole, err = readAll(body, 1<<20); err != nil {
			return fmt.Errorf("reading fragments: %w", err)
		}
		length = int64(len(whole))
	}
	if err := rf.setLength(i, length); err != nil {
		return err
	}
	select {
	case <-rf.placed[i]:
	case <-ctx.Done():
		return ctx.Err()
	}
	off := rf.offsets[i]
	if err := rf.f.begin(); err != nil {
		return err
	}
	if whole != nil {
		if _, err := wf.WriteAt(whole, off); err != nil {
			return err
		}
	} else if _, err := body.WriteToFile(wf, off); err != nil {
		return fmt.Errorf("receiving fragments into %s: %w", wf.Name(), err)
	}
	region, unmap, err := mapRegion(rf.f.File, off, length)
	if err != nil {
		return err
	}
	defer unmap()
	var chunks [][]byte
	// The file's pages are read through the mapping: one that cannot be read (another process cut
	// the file short) is an error, not the end of the process.
	if ferr := mapped.Read(func() { chunks, err = checkRawChunks(region, numbers) }); ferr != nil {
		return fmt.Errorf("checking the answer written to %s: %w", rf.f.File.Name(), ferr)
	}
	if err != nil {
		return err
	}
	// The file must hold what the in-order path writes: the chunks asked for, in order, and
	// nothing else.
	at := 0
	for _, c := range chunks {
		if offsetIn(region, c) != at {
			return fmt.Errorf("reading fragments: the answer to %d fragments is not in the order asked, or holds chunks without frames", len(numbers))
		}
		at += len(c)
	}
	if at != len(region) {
		return fmt.Errorf("reading fragments: %d bytes after the fragments asked for", len(region)-at)
	}
	return nil
}

// setLength records answer i's length; a retried request must give the length the first gave.
func (rf *rawFile) setLength(i int, n int64) error {
	select {
	case <-rf.known[i]:
		if rf.lengths[i] != n {
			return fmt.Errorf("reading fragments: the answer to a retried request is %d bytes, the first was %d", n, rf.lengths[i])
		}
	default:
		rf.lengths[i] = n
		close(rf.known[i])
	}
	return nil
}

// readAll reads r to its end into a pooled buffer of at least size bytes.
func readAll(r io.Reader, size int) ([]byte, error) {
	buf := bufpool.Get(size)
	for {
		if len(buf) == cap(buf) {
			buf = bufpool.Grow(buf, cap(buf))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			bufpool.Put(buf)
			return nil, err
		}
	}
}
