package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/openkvs/kvs/server/store"
)

// The internal tail: how a node that does not write a stream gets its fragments live from the
// node that does, to feed its own live cache (feeder.go). It is a POST route like the KVS
// operations (authenticated the same way; the requesting node signs it), kvs-only:
//
//	POST /kvs/internal/tail  {"StreamName": "cam", "After": 1234}
//
// The answer is a stream of frames, one per fragment after After in number order, from the
// writer's cache or store exactly as GetMedia would send them (the same consumer): a 16-byte
// header (magic "KVSF", the meta's length, the chunk's length, flags: bit 0 = durable), the
// fragment's metadata as JSON, and its stored chunk. Durable says whether the fragment was
// committed when sent; the reader learns of later commits from the cluster's notices. The
// answer ends when the stream is deleted or the writer shuts down; the reader then looks again
// who writes the stream.

const tailPath = "/kvs/internal/tail"

var frameMagic = [4]byte{'K', 'V', 'S', 'F'}

// maxFrameMeta caps a frame's metadata, maxFrameChunk its chunk (a stored fragment is at most
// store.MaxRecordSize).
const (
	maxFrameMeta  = 4 << 10
	maxFrameChunk = store.MaxRecordSize
)

type frameMeta struct {
	Number   uint64 `json:"n"`
	Server   int64  `json:"s"` // Unix ns
	Producer int64  `json:"p"` // Unix ns
	Duration int64  `json:"d"` // ns
}

func appendFrameHeader(b []byte, meta store.FragmentMeta, chunkLen int, durable bool) []byte {
	m, _ := json.Marshal(frameMeta{Number: meta.Number, Server: store.UnixNanos(meta.ServerTime),
		Producer: store.UnixNanos(meta.ProducerTime), Duration: int64(meta.Duration)})
	var flags uint32
	if durable {
		flags = 1
	}
	b = append(b, frameMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
	b = binary.BigEndian.AppendUint32(b, uint32(chunkLen))
	b = binary.BigEndian.AppendUint32(b, flags)
	return append(b, m...)
}

// frame is one fragment read from a tail.
type frame struct {
	meta    store.FragmentMeta
	chunk   []byte
	durable bool
}

// readFrame reads one frame; io.EOF at a clean end between frames.
func readFrame(r io.Reader) (frame, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	if !bytes.Equal(h[:4], frameMagic[:]) {
		return frame{}, errors.New("tail: not a frame")
	}
	ml, cl, flags := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
	if ml > maxFrameMeta || cl > maxFrameChunk {
		return frame{}, fmt.Errorf("tail: frame of %d + %d bytes is over the limits", ml, cl)
	}
	buf := make([]byte, int(ml)+int(cl))
	if _, err := io.ReadFull(r, buf); err != nil {
		return frame{}, io.ErrUnexpectedEOF
	}
	var m frameMeta
	if err := json.Unmarshal(buf[:ml], &m); err != nil {
		return frame{}, fmt.Errorf("tail: frame meta: %w", err)
	}
	return frame{
		meta: store.FragmentMeta{Number: m.Number, ServerTime: store.FromUnixNanos(m.Server), ProducerTime: store.FromUnixNanos(m.Producer),
			Duration: time.Duration(m.Duration), Size: int64(cl)},
		chunk: buf[ml:], durable: flags&1 != 0,
	}, nil
}

type tailRequest struct {
	StreamName string `json:"StreamName"`
	After      uint64 `json:"After"`
}

// tail serves the internal tail of a stream (see above).
func (m *media) tail(ctx context.Context, req *tailRequest) (responder, error) {
	st, err := m.s.lookupStream(ctx, streamRef{StreamName: &req.StreamName}, codeInvalidArgument)
	if err != nil {
		return nil, err
	}
	buf := m.buffer(st)
	notices, unsubscribe := m.notify.subscribe(st.Name)
	return func(w http.ResponseWriter, r *http.Request) {
		defer unsubscribe()
		rc := http.NewResponseController(w)
		c := &consumer{m: m, name: st.Name, buf: buf, w: w, rc: rc, pw: newPacedWriter(w, r, rc, m.writeTimeout), last: req.After, tail: true}
		m.s.metrics.tailsServed.Inc()
		w.Header().Set("Content-Type", "application/octet-stream")
		// A node advertised behind nginx (README's "Behind a reverse proxy") serves its tails
		// through it too: without this nginx held each fragment's last bytes in its buffers until
		// the next one came, and the readers on the other nodes got nothing live.
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		_ = c.rc.Flush()
		c.run(r.Context(), notices, false)
	}, nil
}
