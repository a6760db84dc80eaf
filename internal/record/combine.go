package record

// CombineCRC returns the CRC-32C of a and b one after the other, given crcA of a, crcB of b and
// the length of b, without reading either: a writer that checksums parts while they are in the
// CPU cache (the server checksums each frame as it lands in a fragment's chunk, the chunk's start
// comes last) gets the whole record's checksum from them. It is zlib's crc32_combine: crcA moved
// past lenB zero bytes (a multiplication by x^(8·lenB) modulo the polynomial, some 30
// multiplications of 32 bits), then xored with crcB.
func CombineCRC(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA // b is empty: crcB is 0
	}
	return multModP(x2nModP(lenB, 3), crcA) ^ crcB
}

// poly is CRC-32C's polynomial, reversed (bit 31 is x^0), as the checksums are computed.
const poly = 0x82F63B78

// multModP multiplies a and b modulo the polynomial (reversed bit order: bit 31 is x^0).
func multModP(a, b uint32) uint32 {
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ poly
		} else {
			b >>= 1
		}
	}
}

// x2n holds x^(2^k) modulo the polynomial, for k = 0..31.
var x2n = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// x2nModP returns x^(n·2^k) modulo the polynomial.
func x2nModP(n int64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for ; n != 0; n >>= 1 {
		if n&1 != 0 {
			p = multModP(x2n[k&31], p)
		}
		k++
	}
	return p
}
