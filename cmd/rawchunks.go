package cmd

// get-fragments --format raw passes the chunks of GetMediaForFragmentList through as the server
// sent them: element headers are read to find each chunk, its fragment number and whether it
// holds frames, and the frame bytes are neither parsed nor copied again.

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/openkvs/kvs/client"
	"github.com/openkvs/kvs/internal/bufpool"
	"github.com/openkvs/kvs/mkv"
)

// rawChunk is one GetMedia chunk (EBML header to the next one) of a response.
type rawChunk struct {
	data   []byte
	number string // its AWS_KINESISVIDEO_FRAGMENT_NUMBER tag
	frames bool   // its Cluster holds blocks
	failed bool   // its Tags carry an error (a GetMedia error chunk)
}

var errRawChunks = errors.New("malformed GetMedia chunks")

// splitChunks splits b, concatenated GetMedia chunks, into its chunks. It reads element headers,
// Tags and the headers of a Cluster's children; every element but the Segment must have a known
// size within b. The chunks' data are b's bytes.
func splitChunks(b []byte) ([]rawChunk, error) {
	var out []rawChunk
	cur := -1 // index in out of the chunk being read
	for off := 0; off < len(b); {
		id, size, n, err := mkv.DecodeElementHeader(b[off:])
		if err != nil {
			return nil, fmt.Errorf("%w: offset %d: %w", errRawChunks, off, err)
		}
		start := off
		off += n
		if id == mkv.IDSegment {
			if cur < 0 {
				return nil, fmt.Errorf("%w: offset %d: Segment before an EBML header", errRawChunks, start)
			}
			continue // its children follow; its end is the next EBML header or the end
		}
		if size < 0 || size > int64(len(b)-off) {
			return nil, fmt.Errorf("%w: offset %d: element %#x of size %d in %d bytes", errRawChunks, start, id, size, len(b)-off)
		}
		data := b[off : off+int(size)]
		off += int(size)
		if id == mkv.IDEBML {
			if cur >= 0 {
				out[cur].data = out[cur].data[:start-offsetIn(b, out[cur].data)]
			}
			out = append(out, rawChunk{data: b[start:]})
			cur = len(out) - 1
			continue
		}
		if cur < 0 {
			return nil, fmt.Errorf("%w: offset %d: element %#x before an EBML header", errRawChunks, start, id)
		}
		switch id {
		case mkv.IDTags:
			if out[cur].number == "" {
				out[cur].number, _ = mkv.TagValue(data, mkv.TagFragmentNumber)
			}
			for _, name := range []string{mkv.TagErrorID, mkv.TagErrorCode, mkv.TagExceptionErrorCode} {
				if bytes.Contains(data, []byte(name)) {
					out[cur].failed = true
				}
			}
		case mkv.IDCluster:
			for c := 0; c < len(data); {
				cid, csize, cn, err := mkv.DecodeElementHeader(data[c:])
				if err != nil || csize < 0 || csize > int64(len(data)-c-cn) {
					return nil, fmt.Errorf("%w: offset %d: bad Cluster child", errRawChunks, start+n+c)
				}
				if cid == mkv.IDSimpleBlock || cid == mkv.IDBlockGroup {
					out[cur].frames = true
				}
				c += cn + int(csize)
			}
		}
	}
	return out, nil
}

// offsetIn returns where sub starts in b (sub is a subslice of b).
func offsetIn(b, sub []byte) int { return cap(b) - cap(sub) }

// rawBatch is one GetMediaForFragmentList response: its chunks in the order asked for, in buf
// (pooled: give it back once they are written).
type rawBatch struct {
	buf    []byte
	chunks [][]byte
}

// fetchRawBatch gets numbers with one request and checks that each comes back once; expect is
// the response's expected size (0: unknown). It calls size with the answer's length: its
// Content-Length, or the bytes read when it has none.
func fetchRawBatch(ctx context.Context, cl *client.Client, stream string, numbers []string, expect int, size func(int64)) (rawBatch, error) {
	body, err := cl.GetMediaForFragmentList(ctx, stream, numbers)
	if err != nil {
		return rawBatch{}, err
	}
	defer body.Close()
	if body.Length >= 0 {
		size(body.Length)
		if expect == 0 { // the buffer to start with: no more than a window, whatever the server says
			expect = int(min(body.Length, windowBytes))
		}
	}
	buf, err := readAll(answerReader(body), max(expect+expect/8+64<<10, 1<<20))
	if err != nil {
		return rawBatch{}, fmt.Errorf("reading fragments: %w", err)
	}
	if body.Length < 0 {
		size(int64(len(buf)))
	}
	chunks, err := checkRawChunks(buf, numbers)
	if err != nil {
		bufpool.Put(buf)
		return rawBatch{}, err
	}
	return rawBatch{buf: buf, chunks: chunks}, nil
}

// checkRawChunks splits b, one GetMediaForFragmentList answer to numbers, into its chunks, and
// returns those that hold frames in the order asked for: every number must come back once, and
// no error chunk.
func checkRawChunks(b []byte, numbers []string) ([][]byte, error) {
	chunks, err := splitChunks(b)
	if err != nil {
		return nil, fmt.Errorf("reading fragments: %w", err)
	}
	answer := newBatchAnswer[[]byte](numbers)
	for _, c := range chunks {
		if c.failed && !c.frames {
			// An error chunk: its tags, read the way the other formats read them.
			f, err := mkv.NewFragmentReader(bytes.NewReader(c.data)).Next()
			if err == nil {
				if ce := client.ChunkErrorOf(f); ce != nil {
					err = ce
				}
			}
			if err == nil {
				err = fmt.Errorf("error chunk for fragment %q", c.number)
			}
			return nil, err
		}
		if !c.frames {
			continue
		}
		if err := answer.add(c.number, c.data); err != nil {
			return nil, err
		}
	}
	return answer.inOrder(numbers)
}

// batchAnswer collects what one GetMediaForFragmentList response holds, by fragment number, and
// gives it back in the order asked for: every number asked for must come back, and no other.
type batchAnswer[T any] struct {
	asked map[string]bool
	got   map[string]T
}

func newBatchAnswer[T any](numbers []string) batchAnswer[T] {
	a := batchAnswer[T]{asked: make(map[string]bool, len(numbers)), got: make(map[string]T, len(numbers))}
	for _, n := range numbers {
		a.asked[n] = true
	}
	return a
}

func (a batchAnswer[T]) add(number string, v T) error {
	if !a.asked[number] {
		return fmt.Errorf("response holds fragment %q, which was not asked for", number)
	}
	a.got[number] = v
	return nil
}

func (a batchAnswer[T]) inOrder(numbers []string) ([]T, error) {
	out := make([]T, 0, len(numbers))
	for _, n := range numbers {
		v, ok := a.got[n]
		if !ok {
			return nil, fmt.Errorf("fragment %s missing from the response", n)
		}
		out = append(out, v)
	}
	return out, nil
}
