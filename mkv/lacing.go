package mkv

// Blocks: a SimpleBlock or BlockGroup is read whole (a SimpleBlock of one frame into the caller's
// memory with WithBlockMemory), then split into its frames (Xiph, EBML or fixed-size lacing), one
// EventFrame each.

import (
	"math"
	"time"
)

// startBlock parses a SimpleBlock or BlockGroup held in data and sets up its frames.
func (r *Reader) startBlock(h header, data []byte) error {
	key := true
	var dur int64
	var pad time.Duration
	block := data
	if h.id == IDBlockGroup {
		block = nil
		err := children(data, func(id uint32, v []byte) error {
			switch id {
			case IDBlock:
				if block == nil {
					block = v
				}
			case IDBlockDuration:
				if len(v) > 8 {
					return errBadValue
				}
				d := readUint(v)
				if d > math.MaxInt64/2 {
					return errTimecodeRange
				}
				dur = int64(d)
			case IDReferenceBlock:
				key = false
			case IDDiscardPadding:
				if len(v) > 8 {
					return errBadValue
				}
				pad = time.Duration(readInt(v))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if block == nil {
			return errBadBlock
		}
	}
	track, n := readVint(block)
	if n <= 0 || len(block) < n+3 {
		return errBadBlock
	}
	rel := int16(uint16(block[n])<<8 | uint16(block[n+1]))
	flags := block[n+2]
	if h.id == IDSimpleBlock {
		key = flags&0x80 != 0
	}
	p := n + 3
	r.laces = r.laces[:0]
	if lacing := (flags >> 1) & 3; lacing == 0 {
		r.laces = append(r.laces, len(block)-p)
	} else {
		if p >= len(block) {
			return errBadLacing
		}
		count := int(block[p]) + 1
		var err error
		if p, err = r.lace(block, p+1, count, lacing); err != nil {
			return err
		}
	}
	r.block = block
	r.lacePos = p
	r.laceIdx = 0
	r.blockTC = r.clusterTimecode + int64(rel)
	r.blockKey = key
	r.blockTrk = track
	r.blockOffs = h.offset
	r.blockDur = dur
	r.blockPad = pad
	r.laceStep, r.laceOpus = 0, false
	if len(r.laces) > 1 {
		for i := range r.tracks {
			if r.tracks[i].Number == track && r.tracks[i].DefaultDuration > 0 {
				r.laceStep = float64(r.tracks[i].DefaultDuration) / float64(r.timecodeScale)
				break
			}
		}
		if r.laceStep == 0 && dur > 0 {
			// No DefaultDuration: the BlockDuration covers the laced frames (as ffmpeg reads it).
			r.laceStep = float64(dur) / float64(len(r.laces))
		}
		if r.laceStep == 0 {
			for i := range r.tracks {
				if r.tracks[i].Number == track && r.tracks[i].CodecID == "A_OPUS" {
					// Neither (mkvmerge laces Opus so): each frame's TOC byte tells its
					// duration, and the next frame follows it (as ffmpeg's parser reads them).
					r.laceOpus, r.laceAcc = true, 0
				}
			}
		}
		r.blockDur = dur / int64(len(r.laces))
	}
	return nil
}

// lace reads the sizes of the count frames of a laced block (lacing 1: Xiph, 2: fixed-size, 3:
// EBML) from the lacing header at block[p:], after the frame count, into r.laces, and returns
// where the first frame starts.
func (r *Reader) lace(block []byte, p, count int, lacing byte) (int, error) {
	if lacing == 2 {
		rest := len(block) - p
		if rest%count != 0 {
			return 0, errBadLacing
		}
		for range count {
			r.laces = append(r.laces, rest/count)
		}
		return p, nil
	}
	total, size := 0, 0
	for i := 0; i < count-1; i++ {
		if lacing == 1 { // Xiph: each size is a run of 255s and the byte that ends it
			size = 0
			for {
				if p >= len(block) {
					return 0, errBadLacing
				}
				b := block[p]
				p++
				size += int(b)
				if b != 255 {
					break
				}
			}
		} else { // EBML: the first size, then signed differences
			v, m := readVint(block[p:])
			if m <= 0 {
				return 0, errBadLacing
			}
			if i == 0 {
				if v > uint64(len(block)) {
					return 0, errBadLacing
				}
				size = int(v)
			} else {
				bias := int64(1)<<(7*m-1) - 1 // a difference is stored plus 2^(7m-1)-1
				size += int(int64(v) - bias)
			}
			p += m
			if size < 0 || size > len(block) {
				return 0, errBadLacing
			}
		}
		total += size
		if total > len(block) {
			return 0, errBadLacing
		}
		r.laces = append(r.laces, size)
	}
	last := len(block) - p - total // the last frame is the rest of the block
	if last < 0 {
		return 0, errBadLacing
	}
	r.laces = append(r.laces, last)
	return p, nil
}

func (r *Reader) nextLace() *Event {
	i := r.laceIdx
	size := r.laces[i]
	ev := r.event(EventFrame, r.blockOffs, int64(size))
	ev.Frame.Track = r.blockTrk
	ev.Frame.Timecode = r.blockTC
	if i > 0 && r.laceStep != 0 {
		ev.Frame.Timecode += int64(math.Round(float64(i) * r.laceStep))
	}
	if r.laceOpus {
		ev.Frame.Timecode += int64(math.Round(r.laceAcc))
		r.laceAcc += float64(opusDuration(r.block[r.lacePos:r.lacePos+size])) / float64(r.timecodeScale)
	}
	ev.Frame.Keyframe = r.blockKey
	ev.Frame.Duration = r.blockDur
	// Padding at the start belongs to the block's first frame, padding at the end to its last.
	if r.blockPad < 0 && i == 0 || r.blockPad > 0 && i == len(r.laces)-1 {
		ev.Frame.DiscardPadding = r.blockPad
	}
	ev.Frame.Data = r.block[r.lacePos : r.lacePos+size : r.lacePos+size]
	r.lacePos += size
	r.laceIdx++
	if r.laceIdx == len(r.laces) {
		r.laces = r.laces[:0]
		r.laceIdx = 0
	}
	return ev
}

// blockMemory returns the caller's memory for block h (WithBlockMemory), header and data, or nil:
// when there is no such function, h is not a SimpleBlock, its header cannot be peeked, or it is
// laced.
func (r *Reader) blockMemory(h header) []byte {
	if r.cfg.blockMemory == nil || h.id != IDSimpleBlock {
		return nil
	}
	// The track number (a vint of at most 8 bytes), the timecode (2) and the flags.
	head, _ := r.in.Peek(int(min(h.size, 8+3)))
	_, n := readVint(head)
	if n <= 0 || len(head) < n+3 || (head[n+2]>>1)&3 != 0 {
		return nil
	}
	size := int(h.end() - h.offset)
	dst := r.cfg.blockMemory(size)
	if len(dst) != size {
		return nil
	}
	return dst
}

// readInto reads block h, whose header was consumed, into dst (its length: header and data) and
// returns its data.
func (r *Reader) readInto(h header, dst []byte) ([]byte, error) {
	hl := int(h.data - h.offset)
	n, err := r.in.readElement(h.id, hl, dst)
	r.off += int64(n)
	if err != nil {
		return nil, r.syntax(h, err)
	}
	return dst[hl:], nil
}

// opusDuration returns the duration of an Opus packet from its TOC byte (RFC 6716 3.1), 0 for an
// empty or malformed one.
func opusDuration(p []byte) time.Duration {
	if len(p) == 0 {
		return 0
	}
	var frame time.Duration
	switch cfg := p[0] >> 3; {
	case cfg < 12: // SILK: 10, 20, 40, 60 ms
		frame = [4]time.Duration{10, 20, 40, 60}[cfg%4] * time.Millisecond
	case cfg < 16: // Hybrid: 10, 20 ms
		frame = [2]time.Duration{10, 20}[cfg%2] * time.Millisecond
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = [4]time.Duration{2500, 5000, 10000, 20000}[cfg%4] * time.Microsecond
	}
	switch p[0] & 3 {
	case 0:
		return frame
	case 1, 2:
		return 2 * frame
	}
	if len(p) < 2 {
		return 0
	}
	return time.Duration(p[1]&0x3F) * frame
}
