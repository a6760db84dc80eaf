package mkv

import (
	"errors"
	"io"

	"github.com/openkvs/kvs/internal/bufpool"
)

// The Reader's buffered input. Besides what a bufio.Reader does, it can read ahead into memory
// the caller lends it (Reader.ReadAhead): input read there that turns out to be a SimpleBlock
// the caller gives block memory for (WithBlockMemory) at the address it was read to is already
// in place, and is neither copied nor read in a read of its own. A bulk PutMedia upload, read into
// the fragment's buffer this way, takes about 5 read(2) calls per MB instead of 26, and no copy of
// any frame (BenchmarkIngestCPU in server, kvs-reads/MB; the figures are in README).

// maxAheadRead caps one read into lent memory: what is read past the fragment's end is copied
// back to the Reader's buffer when the memory is taken back (Detach). 1 MiB, the reads a bulk
// upload's socket has data for: 2.5 reads per MB instead of 5.3 with 256 KiB, and 5% less
// server CPU per GB (BenchmarkIngestCPU). A live stream's reads are much smaller: its socket
// holds a frame or two.
const maxAheadRead = 1 << 20

// input is the Reader's source and its buffer. Unread input is buf[r:w]. buf is own, or, from
// ReadAhead to Detach, the lent memory to its capacity, which is filled forward and never slid.
type input struct {
	src    io.Reader
	size   int    // the Reader's buffer size
	own    []byte // the Reader's buffer, or spill
	small  []byte // the Reader's buffer of its size
	spill  []byte // a pool buffer that took over more from lent memory than small holds, or nil
	buf    []byte // own or lent
	r, w   int
	err    error  // from src; returned once buf[r:w] is consumed
	lent   []byte // ReadAhead's memory to its capacity, nil when none
	inLent bool   // buf is lent
}

var errNoProgress = errors.New("mkv: input returned no data and no error 100 times")

func newInput(src io.Reader, size int) *input {
	own := make([]byte, size)
	return &input{src: src, size: size, own: own, small: own, buf: own}
}

// Buffered returns the number of unread bytes held.
func (in *input) Buffered() int { return in.w - in.r }

// fill reads from src once, after buf[w]: into lent memory while it has room, else into own,
// with the unread bytes slid to its start.
func (in *input) fill() {
	if in.err != nil {
		return
	}
	if in.inLent && in.w == len(in.buf) {
		in.leaveLent()
	}
	var p []byte
	if in.inLent {
		p = in.buf[in.w:min(len(in.buf), in.w+maxAheadRead)]
	} else {
		if in.spill != nil && in.r == in.w {
			// Drained: give the spill back, so that an upload's Reader keeps its size between
			// the reads that ran past a fragment (1000 live uploads after a stall, each read up
			// to maxAheadRead past, would otherwise hold a megabyte each for good).
			bufpool.Put(in.spill)
			in.spill, in.own = nil, in.small
			in.buf, in.r, in.w = in.own, 0, 0
		}
		if in.r > 0 {
			in.w = copy(in.buf, in.buf[in.r:in.w])
			in.r = 0
		}
		p = in.buf[in.w:]
		if len(p) == 0 {
			return // full: Peek asks no more than the buffer holds
		}
	}
	for range 100 {
		n, err := in.src.Read(p)
		if n < 0 || n > len(p) {
			in.err = errors.New("mkv: input returned an invalid count")
			return
		}
		in.w += n
		if err != nil {
			in.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	in.err = errNoProgress
}

// leaveLent moves the unread bytes from lent memory to own (grown if need be).
func (in *input) leaveLent() {
	pending := in.buf[in.r:in.w]
	if len(pending)+maxHeaderLen > len(in.own) { // room to peek a header past it
		spill := bufpool.Get(len(pending) + in.size)
		if in.spill != nil {
			bufpool.Put(in.spill) // nothing of it is unread: the pending bytes are in lent memory
		}
		in.spill = spill[:cap(spill)]
		in.own = in.spill
	}
	in.w = copy(in.own, pending)
	in.buf, in.r, in.inLent = in.own, 0, false
}

// Peek returns the next n bytes without consuming them; fewer, with the error, when the input
// ends (or, in own, when n is over its size: n is at most a header here).
func (in *input) Peek(n int) ([]byte, error) {
	for in.w-in.r < n && in.err == nil {
		if !in.inLent && n > len(in.buf) {
			return in.buf[in.r:in.w], io.ErrShortBuffer
		}
		in.fill()
	}
	if in.w-in.r < n {
		return in.buf[in.r:in.w], in.err
	}
	return in.buf[in.r : in.r+n], nil
}

// Discard skips n bytes, returning how many it skipped and, when fewer, why.
func (in *input) Discard(n int) (int, error) {
	done := 0
	for {
		k := min(n-done, in.w-in.r)
		in.r += k
		done += k
		if done == n {
			return done, nil
		}
		if in.err != nil {
			return done, in.err
		}
		if in.inLent {
			in.leaveLent() // what is skipped need not fill lent memory
		}
		in.fill()
	}
}

// Read reads up to len(p) bytes into p: from the buffer, or straight from src into p when the
// buffer is empty and p is at least its size.
func (in *input) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if in.r == in.w {
		if in.err != nil {
			return 0, in.err
		}
		if !in.inLent && len(p) >= in.size {
			n, err := in.src.Read(p)
			if n < 0 || n > len(p) {
				return 0, errors.New("mkv: input returned an invalid count")
			}
			in.err = err
			return n, nil
		}
		in.fill()
		if in.r == in.w {
			return 0, in.err
		}
	}
	n := copy(p, in.buf[in.r:in.w])
	in.r += n
	return n, nil
}

// readElement reads the element whose header (hl bytes, its ID id and data size) was just
// consumed into dst, header and data, and returns how many data bytes it consumed: nothing to
// read for what lent memory holds at dst's address already. When dst lies in lent memory, the
// input from there on is read into that memory.
func (in *input) readElement(id uint32, hl int, dst []byte) (int, error) {
	data := dst[hl:]
	at, inLent := in.lentOffset(dst)
	if in.inLent && inLent && at == in.r-hl {
		return in.consumeLent(len(data))
	}
	if in.inLent && inLent && at > in.r-hl {
		// After where the input was read to (the caller broke ReadAhead's rule): writing the
		// header would overwrite what is unread.
		in.leaveLent()
	}
	// The header as it was read: the ID, and the size in as many bytes as it had.
	b := appendID(dst[:0], id)
	putVint(dst[len(b):hl], uint64(len(data)), hl-len(b))
	n := copy(data, in.buf[in.r:in.w])
	in.r += n
	rest := data[n:]
	at, ok := in.lentOffset(rest)
	switch {
	case len(rest) == 0:
		if ok && in.inLent && at+in.w-in.r <= len(in.buf) {
			// dst lies before where the input was read to: slide what is unread to right
			// after it, so that the next block is in place again.
			in.w = at + copy(in.buf[at:], in.buf[in.r:in.w])
			in.r = at
		}
		return n, nil
	case ok:
		// All that was held is consumed: go on reading in lent memory, from rest on.
		in.buf, in.r, in.w, in.inLent = in.lent, at, at, true
		k, err := in.consumeLent(len(rest))
		return n + k, err
	}
	k, err := io.ReadFull(in, rest)
	return n + k, unexpected(err)
}

// consumeLent consumes n bytes of lent memory from r on, reading until they are there (they
// lie in lent memory: fill does not leave it). It returns how many it consumed.
func (in *input) consumeLent(n int) (int, error) {
	for in.w-in.r < n && in.err == nil {
		in.fill()
	}
	k := min(n, in.w-in.r)
	in.r += k
	if k < n {
		return k, unexpected(in.err)
	}
	return k, nil
}

// lentOffset returns where p starts in lent memory, if it lies there.
func (in *input) lentOffset(p []byte) (int, bool) {
	if in.lent == nil || cap(p) == 0 || cap(p) > len(in.lent) {
		return 0, false
	}
	full := p[:cap(p)]
	if &full[len(full)-1] != &in.lent[len(in.lent)-1] {
		return 0, false
	}
	return len(in.lent) - cap(p), true
}

// ReadAhead lends the Reader mem[len(mem):cap(mem)] to read its input into, until Detach. A
// SimpleBlock given block memory (WithBlockMemory) at the address the input was read to is then
// already there. Until Detach the caller must write nothing in that memory but what the block
// memory function returns (which the Reader fills), and must not give the memory up.
func (r *Reader) ReadAhead(mem []byte) {
	in := r.in
	in.detach()
	in.lent = mem[:cap(mem)]
	if in.r == in.w && len(mem) < cap(mem) {
		in.buf, in.r, in.w, in.inLent = in.lent, len(mem), len(mem), true
	}
}

// Detach takes back the memory ReadAhead lent: input read into it and not yet consumed moves to
// the Reader's own buffer. Call it before writing in that memory past the blocks the Reader
// filled, or giving it up.
func (r *Reader) Detach() { r.in.detach() }

func (in *input) detach() {
	if in.inLent {
		in.leaveLent()
	}
	in.lent = nil
}
