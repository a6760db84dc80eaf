package mpegts

import "slices"

// Continuity counters across segments. A transport stream numbers the packets of each PID that
// carry payload with a 4-bit continuity counter, and a demuxer that sees a counter out of sequence
// takes packets for lost: ffmpeg flags the PES it is reading corrupt ("Packet corrupt",
// "corrupt input packet in stream 0" at its default log level, for the keyframe that starts every
// segment) and a player may drop it. An HLS player reads consecutive segments as one stream, so
// the counters must run on from one segment into the next; but a segment is made from its own
// fragment alone (doc.go), without knowing how many packets the one before it had.
//
// So every segment starts each elementary stream's counter at 0 and ends it at 15: the stream's
// last PES is spread over as many more packets as that takes (at most 15), each extra packet
// carrying part of its payload after adaptation-field stuffing, as muxers stuff any short
// packet. The PES bytes are unchanged; a segment costs up to 15 packets more per track (1.4 KiB
// each on average: TestOverhead's 720p 2 Mbit/s clip in 1 s fragments went from +3.4% to +4.5%
// over fMP4). The PAT and PMT, two packets of
// each per segment, are left as they are: their counters restart in every segment, which
// demuxers take as the new table it is.

const (
	packetSize  = 188
	payloadSize = packetSize - 4 // after the 4-byte header
)

// packetInfo is what continuous needs to know of one packet.
type packetInfo struct {
	pid     uint16
	pusi    bool // payload_unit_start_indicator
	payload int  // offset of the payload in the packet, or 0 for none
}

func parsePacket(p []byte) packetInfo {
	info := packetInfo{pid: uint16(p[1]&0x1f)<<8 | uint16(p[2]), pusi: p[1]&0x40 != 0}
	switch p[3] >> 4 & 3 {
	case 1:
		info.payload = 4
	case 3:
		if at := 5 + int(p[4]); at < packetSize {
			info.payload = at
		}
	}
	return info
}

// continuous makes the packets of b from offset from (whole 188-byte packets, as
// mcmpegts.Writer writes them) run the continuity counter of every PES stream from 0 to 15 (see
// above), in place, and returns b extended by the packets that takes. A stream whose last PES has
// fewer payload bytes than the packets it would need (never, for a frame of video or AAC) keeps
// its counters as written. Besides b it allocates about its streams' last PES.
func continuous(b []byte, from int) []byte {
	seg := b[from:]
	n := len(seg) / packetSize
	infos := make([]packetInfo, n)
	count := map[uint16]int{}   // payload packets per PID
	lastPES := map[uint16]int{} // index of each PES stream's last PES's first packet
	pes := map[uint16]bool{}
	for i := range n {
		p := seg[i*packetSize : (i+1)*packetSize]
		info := parsePacket(p)
		infos[i] = info
		if info.payload == 0 {
			continue
		}
		count[info.pid]++
		if isPESStart(p, info) {
			pes[info.pid] = true
			lastPES[info.pid] = i
		}
	}
	// extra[i] holds the packets that replace packet i (none: kept as it is).
	extra := map[int][][]byte{}
	added := 0
	for pid := range pes {
		short := (16 - count[pid]%16) % 16
		if short == 0 {
			continue
		}
		var slots []int
		var payload []byte
		for i := lastPES[pid]; i < n; i++ {
			if infos[i].pid == pid && infos[i].payload > 0 {
				slots = append(slots, i)
				payload = append(payload, seg[i*packetSize+infos[i].payload:(i+1)*packetSize]...)
			}
		}
		first := seg[slots[0]*packetSize : (slots[0]+1)*packetSize]
		packets := spread(first, payload, len(slots)+short)
		if packets == nil {
			continue
		}
		for k, i := range slots {
			extra[i] = packets[k : k+1]
		}
		last := slots[len(slots)-1]
		extra[last] = packets[len(slots)-1:]
		added += short
	}
	if added > 0 {
		// Every packet moves to the same place or later: moved from the last, nothing is
		// overwritten before it is read (the replaced payloads are in extra already).
		b = slices.Grow(b, added*packetSize)[:len(b)+added*packetSize]
		seg = b[from:]
		at := len(seg)
		for i := n - 1; i >= 0; i-- {
			ps, ok := extra[i]
			if !ok {
				at -= packetSize
				copy(seg[at:], seg[i*packetSize:(i+1)*packetSize])
				continue
			}
			for k := len(ps) - 1; k >= 0; k-- {
				at -= packetSize
				copy(seg[at:], ps[k])
			}
		}
	}
	// Number them: 0 for each stream's first payload packet; a packet without payload repeats
	// the counter before it (15, the previous segment's last, before the first).
	cc := map[uint16]byte{}
	for i := 0; i+packetSize <= len(seg); i += packetSize {
		p := seg[i : i+packetSize]
		info := parsePacket(p)
		if !pes[info.pid] {
			continue
		}
		c, seen := cc[info.pid]
		switch {
		case info.payload == 0 && !seen:
			c = 15
		case info.payload == 0:
		case !seen:
			c = 0
		default:
			c = (c + 1) & 15
		}
		if info.payload > 0 {
			cc[info.pid] = c
		}
		p[3] = p[3]&0xf0 | c
	}
	return b
}

// spread packs payload, the bytes of a PES (the payloads of its packets, the first of which is
// first), into exactly k packets of first's PID: the first keeps first's header and adaptation
// field (PCR, random access), each carries at least one byte, and a packet with fewer than 184
// bytes has its adaptation field stuffed. Nil when payload is shorter than k bytes.
func spread(first []byte, payload []byte, k int) [][]byte {
	if len(payload) < k {
		return nil
	}
	var af []byte // first's adaptation field's contents, after its length byte
	if first[3]>>4&3 == 3 {
		af = first[5 : 5+int(first[4])]
	}
	out := make([][]byte, k)
	for j := range k {
		capacity := payloadSize
		if j == 0 && af != nil {
			capacity = payloadSize - 1 - len(af)
		}
		size := min(capacity, len(payload)-(k-1-j))
		p := make([]byte, 0, packetSize)
		p = append(p, 0x47, first[1], first[2], first[3]&0xc0|0x10) // payload only, counter later
		if j > 0 {
			p[1] &^= 0x40 // payload_unit_start_indicator: the first packet's alone
		}
		if size < payloadSize {
			p[3] |= 0x20 // an adaptation field, stuffed
			fieldLen := payloadSize - 1 - size
			p = append(p, byte(fieldLen))
			if j == 0 && len(af) > 0 {
				p = append(p, af...) // its flags byte first
			} else if fieldLen > 0 {
				p = append(p, 0) // no flags
			}
			for len(p) < 5+fieldLen {
				p = append(p, 0xff)
			}
		}
		p = append(p, payload[:size]...)
		payload = payload[size:]
		out[j] = p
	}
	return out
}

// isPESStart reports whether packet p starts a PES: its payload begins with a start code (a
// table's does not).
func isPESStart(p []byte, info packetInfo) bool {
	q := p[info.payload:]
	return info.pusi && len(q) >= 3 && q[0] == 0 && q[1] == 0 && q[2] == 1
}
