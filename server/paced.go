package server

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/openkvs/kvs/internal/bufpool"
)

// writePiece is how much of a media response one write deadline covers on a connection that
// does not pace itself (see pacedWriter).
const writePiece = 64 << 10

// streamPiece is how much of a stored fragment pacedWriter.stream reads and writes at a time on a
// connection that paces itself: few, large writes, while a reader that takes its time holds
// one piece of the fragment, not the whole.
const streamPiece = 1 << 20

// pacedWriter writes the chunks of a media response (GetMedia, GetMediaForFragmentList, GetClip),
// flushing each, so that a client that stops reading is dropped after the media write timeout
// while one that reads slowly but steadily gets chunks of any size. (With one deadline for the
// whole chunk, a reader whose link moved a fragment in more than 30 s was cut in the middle of
// every large one, and met the same chunk again when it reconnected.)
//
// On a connection of Listener the connection itself gives every 64 KiB sent the timeout (conn_unix.go),
// so a chunk goes to net/http in one Write: one HTTP chunk and socket writes as large as the
// socket takes. Elsewhere (a listener of the embedding program's, TLS without Listener beneath,
// and HTTP/2 on any connection, whose write deadline is a timer on the stream, not the
// connection's) the writer sets the deadline itself before every writePiece bytes: more writes,
// same promise.
type pacedWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	paced   bool      // the connection paces itself: a part goes in one Write
	h2      bool      // HTTP/2: the write deadline is a timer on the stream (write)
	until   time.Time // no deadline past this (media.sendWithin), when set
}

func newPacedWriter(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, timeout time.Duration) pacedWriter {
	until, _ := r.Context().Value(sendUntilKey{}).(time.Time)
	return pacedWriter{w: w, rc: rc, timeout: timeout, paced: r.ProtoMajor == 1 && connPaces(r.Context()), h2: r.ProtoMajor >= 2, until: until}
}

// deadline is the write deadline of a write starting now.
func (p pacedWriter) deadline() time.Time {
	d := time.Now().Add(p.timeout)
	if !p.until.IsZero() && p.until.Before(d) {
		return p.until
	}
	return d
}

// write writes parts, one chunk of the response, and flushes.
func (p pacedWriter) write(parts ...[]byte) error {
	for _, b := range parts {
		for len(b) > 0 {
			n := len(b)
			if !p.paced {
				n = min(n, writePiece)
			}
			_ = p.rc.SetWriteDeadline(p.deadline())
			if _, err := p.w.Write(b[:n]); err != nil {
				return err
			}
			b = b[n:]
		}
	}
	_ = p.rc.SetWriteDeadline(p.deadline())
	if err := p.rc.Flush(); err != nil {
		return err
	}
	// On HTTP/2 the deadline is a timer on the stream that resets it when it fires, written to or
	// not, so a GetMedia follower of a stream quiet for longer than the timeout was cut
	// (RST_STREAM): the chunk is out, no deadline while the response waits for the next one. (On
	// HTTP/1 a deadline is checked only by a write, and every write sets its own: nothing to do on
	// the delivery path.)
	if p.h2 {
		_ = p.rc.SetWriteDeadline(time.Time{})
	}
	return nil
}

// Write writes b as one chunk (fmp4.Writer's output in GetClip).
func (p pacedWriter) Write(b []byte) (int, error) {
	if err := p.write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// copy writes what r holds as part of one chunk, on a connection that paces itself (only there:
// net/http hands it to the connection's ReadFrom, which sends a file section with sendfile(2) under
// the pace). The chunk's other parts follow with write, which flushes.
func (p pacedWriter) copy(r io.Reader) error {
	_ = p.rc.SetWriteDeadline(p.deadline())
	_, err := io.Copy(p.w, r)
	return err
}

// stream writes what r holds as part of one chunk, a writePiece at a time, each under the write
// timeout, without flushing: the chunk's other parts follow with write, which flushes. Memory is
// one piece, however large r and however slow the reader. It returns the bytes written; a read
// error is set in *rerr (and ends the chunk), a write error returned.
func (p pacedWriter) stream(r io.Reader, rerr *error) (int64, error) {
	piece := writePiece
	if p.paced {
		piece = streamPiece // one HTTP chunk each, and socket writes as large as the socket takes
	}
	buf := bufpool.Get(piece)
	defer bufpool.Put(buf)
	buf = buf[:piece]
	var written int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			_ = p.rc.SetWriteDeadline(p.deadline())
			if _, werr := p.w.Write(buf[:n]); werr != nil {
				return written, werr
			}
			written += int64(n)
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return written, nil
		case err != nil:
			*rerr = err
			return written, nil
		}
	}
}
