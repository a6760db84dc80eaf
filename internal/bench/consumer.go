package bench

// The consumers: one live GetMedia (NOW) per stream, walked header by header.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/openkvs/kvs/mkv"
)

func (s *stream) allDelivered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.frags {
		if !f.lastByte.IsZero() && f.delivered.IsZero() {
			return false
		}
	}
	return true
}

// consume runs one GetMedia NOW response until ctx ends; it reports on ready once the response
// has started (so that no fragment published after that is missed).
func (s *stream) consume(ctx context.Context, ready chan<- error) {
	r := s.r
	body := []byte(`{"StreamName":` + strconv.Quote(s.name) + `,"StartSelector":{"StartSelectorType":"NOW"}}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.getURL, bytes.NewReader(body))
	if err != nil {
		ready <- err
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if err := r.cfg.Client.Sign(ctx, req, body); err != nil {
		ready <- err
		return
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		ready <- fmt.Errorf("stream %s: status %d: %s", s.name, resp.StatusCode, bytes.TrimSpace(b))
		return
	}
	ready <- nil
	err = walkChunks(resp.Body, func(c chunkInfo) {
		now := time.Now()
		s.mu.Lock()
		rec := s.frags[c.timecode]
		first := rec != nil && rec.delivered.IsZero()
		if first {
			rec.delivered = now
			rec.deliveredNumber, rec.deliveredBytes = c.number, c.frameBytes
		}
		s.mu.Unlock()
		// Every chunk is checked, not only the first of each fragment: one that no fragment
		// sent on this stream has (another stream's, or garbage) or a fragment's second copy
		// is an error, and its bytes are not the fragment's.
		switch {
		case rec == nil:
			r.fail("get-media-unexpected-chunk", fmt.Errorf("stream %s: chunk with timecode %d (fragment number %q), which this stream did not send", s.name, c.timecode, c.number))
		case !first:
			r.fail("get-media-duplicate-chunk", fmt.Errorf("stream %s: fragment with timecode %d (fragment number %q) delivered again", s.name, c.timecode, c.number))
		}
		select {
		case s.got <- struct{}{}:
		default:
		}
	})
	if err != nil && ctx.Err() == nil {
		r.fail("get-media", fmt.Errorf("stream %s: %w", s.name, err))
	}
}

var errChunk = errors.New("GetMedia error chunk")

// chunkInfo is what the consumer checks of one delivered chunk.
type chunkInfo struct {
	timecode   int64  // the Cluster's
	number     string // the chunk's AWS_KINESISVIDEO_FRAGMENT_NUMBER tag
	frameBytes int    // the frames' bytes (SimpleBlock payloads) in its Cluster
}

// walkChunks reads a GetMedia response (concatenated MKV documents, one per fragment) and calls
// delivered once a chunk has been read through the Tags that follow its Cluster, with the
// fragment number of its Tags, its cluster timecode and the size of its frames, so that every
// delivered byte is counted against the fragment that sent it. It reads element headers only:
// frame bytes are discarded unparsed.
func walkChunks(r io.Reader, delivered func(chunkInfo)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var tags []byte
	haveCluster := false
	var c chunkInfo
	for {
		id, size, _, err := mkv.ReadElementHeader(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch id {
		case mkv.IDSegment:
			continue // descend
		case mkv.IDEBML:
			haveCluster = false
			c = chunkInfo{}
		case mkv.IDCluster:
			if size < 0 {
				return errors.New("unknown-size cluster in a GetMedia chunk")
			}
			if c.timecode, c.frameBytes, err = walkCluster(br, size); err != nil {
				return err
			}
			haveCluster = true
			continue
		case mkv.IDTags:
			if size < 0 || size > 1<<20 {
				return fmt.Errorf("tags of size %d", size)
			}
			tags = slices.Grow(tags[:0], int(size))[:size]
			if _, err := io.ReadFull(br, tags); err != nil {
				return err
			}
			if bytes.Contains(tags, []byte(mkv.TagErrorID)) {
				return errChunk
			}
			if haveCluster {
				haveCluster = false
				delivered(c)
			} else if n, ok := mkv.TagValue(tags, mkv.TagFragmentNumber); ok {
				c.number = n
			}
			continue
		}
		if size < 0 {
			return fmt.Errorf("unknown-size element %#x", id)
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
	}
}

// walkCluster reads a known-size Cluster's children, returns its Timecode and the size of its
// SimpleBlocks' frames, and leaves the reader after the Cluster.
func walkCluster(br *bufio.Reader, size int64) (tc int64, frameBytes int, err error) {
	for size > 0 {
		id, n, hdr, err := mkv.ReadElementHeader(br)
		if err != nil {
			return 0, 0, noEOF(err)
		}
		size -= int64(hdr)
		if n < 0 || n > size {
			return 0, 0, errors.New("bad cluster child size")
		}
		switch id {
		case mkv.IDTimecode:
			var v uint64
			for range n {
				c, err := br.ReadByte()
				if err != nil {
					return 0, 0, noEOF(err)
				}
				v = v<<8 | uint64(c)
			}
			tc = int64(v)
		case mkv.IDSimpleBlock:
			// Track number (a 1-byte vint for tracks below 127), 2-byte timecode, flags.
			if b, err := br.Peek(1); err != nil || b[0]&0x80 == 0 || n < 4 {
				return 0, 0, errors.New("bad SimpleBlock")
			}
			frameBytes += int(n) - 4
			fallthrough
		default:
			if _, err := br.Discard(int(n)); err != nil {
				return 0, 0, noEOF(err)
			}
		}
		size -= n
	}
	return tc, frameBytes, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
