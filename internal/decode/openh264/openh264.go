//go:build cgo && !x264

// Package openh264 decodes H.264 in process with OpenH264, for GetImages. It links the static
// OpenH264 2.1 library that github.com/pion/mediadevices bundles for its encoder, which capture
// already uses: the build that has the encoder has this decoder at no extra cost. Builds without
// cgo, or with the x264 tag (whose encoder cannot share a binary with OpenH264), get a New that
// reports the decoder missing.
//
// The C declarations below are the parts of OpenH264's codec_api.h, codec_app_def.h and
// codec_def.h (BSD-2-Clause, Cisco) that decoding needs, as of version 2.1.1, which is what
// mediadevices v0.9.4 bundles: the headers ship inside that module, out of reach of this package's
// cgo flags. New checks the library's version, so that another version is never called through
// these declarations.
package openh264

/*
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned int uMajor, uMinor, uRevision, uReserved; } OpenH264Version;
typedef struct { unsigned int size; int eVideoBsType; } SVideoProperty;
typedef struct {
  char* pFileNameRestructed;
  unsigned int uiCpuLoad;
  unsigned char uiTargetDqLayer;
  int eEcActiveIdc;
  bool bParseOnly;
  SVideoProperty sVideoProperty;
} SDecodingParam;
typedef struct { int iWidth, iHeight, iFormat; int iStride[2]; } SSysMEMBuffer;
typedef struct {
  int iBufferStatus;
  unsigned long long uiInBsTimeStamp;
  unsigned long long uiOutYuvTimeStamp;
  union { SSysMEMBuffer sSystemBuffer; } UsrData;
  unsigned char* pDst[3];
} SBufferInfo;

typedef struct ISVCDecoderVtbl ISVCDecoderVtbl;
typedef const ISVCDecoderVtbl* ISVCDecoder;
struct ISVCDecoderVtbl {
  long (*Initialize)(ISVCDecoder*, const SDecodingParam*);
  long (*Uninitialize)(ISVCDecoder*);
  int (*DecodeFrame)(ISVCDecoder*, const unsigned char*, const int, unsigned char**, int*, int*, int*);
  int (*DecodeFrameNoDelay)(ISVCDecoder*, const unsigned char*, const int, unsigned char**, SBufferInfo*);
  int (*DecodeFrame2)(ISVCDecoder*, const unsigned char*, const int, unsigned char**, SBufferInfo*);
  int (*FlushFrame)(ISVCDecoder*, unsigned char**, SBufferInfo*);
  int (*DecodeParser)(ISVCDecoder*, const unsigned char*, const int, void*);
  int (*DecodeFrameEx)(ISVCDecoder*, const unsigned char*, const int, unsigned char*, int, int*, int*, int*, int*);
  long (*SetOption)(ISVCDecoder*, int, void*);
  long (*GetOption)(ISVCDecoder*, int, void*);
};
long WelsCreateDecoder(ISVCDecoder** ppDecoder);
void WelsDestroyDecoder(ISVCDecoder* pDecoder);
void WelsGetCodecVersionEx(OpenH264Version* pVersion);

// kvs_version returns the library's version as major*1000+minor.
static int kvs_version(void) {
  OpenH264Version v;
  memset(&v, 0, sizeof v);
  WelsGetCodecVersionEx(&v);
  return (int)(v.uMajor * 1000 + v.uMinor);
}

// kvs_open returns a decoder for plain H.264 (AVC) with error concealment off, or NULL.
static ISVCDecoder* kvs_open(void) {
  ISVCDecoder* d = NULL;
  if (WelsCreateDecoder(&d) != 0 || d == NULL) return NULL;
  SDecodingParam p;
  memset(&p, 0, sizeof p);
  p.sVideoProperty.size = sizeof p.sVideoProperty;
  p.sVideoProperty.eVideoBsType = 0; // VIDEO_BITSTREAM_AVC
  p.eEcActiveIdc = 0;                // ERROR_CON_DISABLE
  if ((*d)->Initialize(d, &p) != 0) {
    WelsDestroyDecoder(d);
    return NULL;
  }
  return d;
}

static void kvs_close(ISVCDecoder* d) {
  (*d)->Uninitialize(d);
  WelsDestroyDecoder(d);
}

// kvs_decode decodes one access unit (n == 0: flushes a picture held back for reordering).
// It returns the decoding state (0: no error) and, in out and info, a picture when one is ready.
static int kvs_decode(ISVCDecoder* d, const unsigned char* src, int n, unsigned char** out, SBufferInfo* info) {
  memset(info, 0, sizeof *info);
  out[0] = out[1] = out[2] = NULL;
  if (n == 0) return (*d)->FlushFrame(d, out, info);
  return (*d)->DecodeFrameNoDelay(d, src, n, out, info);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"image"
	"unsafe"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	_ "github.com/pion/mediadevices/pkg/codec/openh264" // links the static OpenH264 library

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/mkv/codec"
)

// wantVersion is the OpenH264 version the declarations above were written for (major*1000+minor).
const wantVersion = 2001

// Decoder decodes H.264 with OpenH264 in process. It is safe for concurrent use: each Decode has
// a decoder instance of its own (about 1 ms to set up), created and freed in the call.
type Decoder struct{ version string }

// New returns the decoder, or an error when this binary has none (see stub.go) or the linked
// library is not the version this package was written for.
func New() (*Decoder, error) {
	v := int(C.kvs_version())
	if v != wantVersion {
		return nil, fmt.Errorf("openh264: library version %d.%d, want 2.1", v/1000, v%1000)
	}
	return &Decoder{version: "2.1"}, nil
}

// Decodes reports whether c is H.264.
func (d *Decoder) Decodes(c codec.Codec) bool { return c == codec.H264 }

func (d *Decoder) String() string { return "openh264 " + d.version + " (embedded)" }

// Decode implements decode.Decoder. A run whose frames do not all give a picture (a frame
// OpenH264 cannot decode: interlaced, 4:2:2, more than 8 bits) gives no images; decode.Chain then
// asks the next decoder for them.
func (d *Decoder) Decode(ctx context.Context, job *decode.Job) ([][]byte, error) {
	if err := job.Validate(); err != nil {
		return nil, err
	}
	if job.Codec != codec.H264 {
		return nil, fmt.Errorf("openh264: %v is not H.264", job.Codec)
	}
	out := make([][]byte, len(job.Want))
	ps, err := codec.ParseConfig(codec.H264, job.CodecPrivate)
	if err != nil {
		return out, nil
	}
	fullRange := false
	var sps h264.SPS
	if sps.Unmarshal(ps.SPS[0]) == nil && sps.VUI != nil && sps.VUI.VideoSignalTypePresentFlag {
		fullRange = sps.VUI.VideoFullRangeFlag
	}
	var prefix []byte
	for _, set := range [][][]byte{ps.SPS, ps.PPS} {
		for _, n := range set {
			prefix = append(append(prefix, 0, 0, 0, 1), n...)
		}
	}
	wantAt := map[int]int{} // output position → index in job.Want
	for i, p := range job.Want {
		wantAt[p] = i
	}
	s := &session{job: job, fullRange: fullRange, wantAt: wantAt, out: out}
	defer s.close()
	pos := 0
	for start := 0; start < len(job.Frames); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := start + 1
		for end < len(job.Frames) && !job.Frames[end].Start {
			end++
		}
		if err := s.run(prefix, ps.LengthSize, start, end, pos); err != nil {
			return nil, err
		}
		pos += end - start
		start = end
	}
	return out, nil
}

// session is one Decode call: its OpenH264 instance, input buffer and results.
type session struct {
	job       *decode.Job
	fullRange bool
	wantAt    map[int]int
	out       [][]byte

	dec  *C.ISVCDecoder
	buf  unsafe.Pointer // C memory for the access unit being decoded
	size int
}

func (s *session) close() {
	if s.dec != nil {
		C.kvs_close(s.dec)
	}
	C.free(s.buf)
}

// errInstance: OpenH264 could not create a decoder (out of memory).
var errInstance = errors.New("openh264: cannot create a decoder")

// run decodes frames [start, end) of the job, a run whose first picture has output position pos,
// with a fresh decoder instance, and encodes its wanted pictures. A run that does not give one
// picture per frame leaves its images out.
func (s *session) run(prefix []byte, lengthSize, start, end, pos int) error {
	if s.dec != nil {
		C.kvs_close(s.dec)
	}
	if s.dec = C.kvs_open(); s.dec == nil {
		return errInstance
	}
	var pics []*image.YCbCr // wanted pictures by rank in the run; nil for others
	got := 0
	keep := func(pic *image.YCbCr) {
		if _, ok := s.wantAt[pos+got]; ok {
			pics = append(pics, pic)
		} else {
			pics = append(pics, nil)
		}
		got++
	}
	var au []byte
	for i := start; i < end; i++ {
		au = au[:0]
		if i == start {
			au = append(au, prefix...)
		}
		n := len(au)
		err := codec.WalkAVCC(s.job.Frames[i].Data, lengthSize, func(nalu []byte) error {
			au = append(append(au, 0, 0, 0, 1), nalu...)
			return nil
		})
		if err != nil || len(au) == n {
			return nil // a malformed frame: the run gives no picture
		}
		pic, ok := s.decode(au)
		if !ok {
			return nil
		}
		if pic != nil {
			keep(s.picture(pos+got, pic))
		}
	}
	for got < end-start { // pictures held back for reordering
		pic, ok := s.decode(nil)
		if !ok || pic == nil {
			return nil
		}
		keep(s.picture(pos+got, pic))
	}
	for rank, pic := range pics {
		if pic == nil {
			continue
		}
		img, err := decode.Encode(pic, s.job.Width, s.job.Height, s.job.Format, s.job.Quality)
		if err != nil {
			return err
		}
		s.out[s.wantAt[pos+rank]] = img
	}
	return nil
}

// decoded is a picture in OpenH264's memory, valid until the next decode call.
type decoded struct {
	planes        [3]*C.uchar
	width, height int
	yStride       int
	cStride       int
}

// decode hands one access unit to OpenH264 (nil: flush) and returns the picture it gives, if
// any; ok is false when the decoder reports an error.
func (s *session) decode(au []byte) (*decoded, bool) {
	if len(au) > s.size {
		C.free(s.buf)
		s.size = max(len(au), 2*s.size)
		s.buf = C.malloc(C.size_t(s.size))
	}
	if len(au) > 0 {
		C.memcpy(s.buf, unsafe.Pointer(&au[0]), C.size_t(len(au)))
	}
	var planes [3]*C.uchar
	var info C.SBufferInfo
	state := C.kvs_decode(s.dec, (*C.uchar)(s.buf), C.int(len(au)), &planes[0], &info)
	if state != 0 && len(au) > 0 {
		return nil, false
	}
	if info.iBufferStatus != 1 {
		return nil, true
	}
	sb := (*C.SSysMEMBuffer)(unsafe.Pointer(&info.UsrData))
	return &decoded{planes: planes, width: int(sb.iWidth), height: int(sb.iHeight),
		yStride: int(sb.iStride[0]), cStride: int(sb.iStride[1])}, true
}

// picture returns p in Go memory, full range and at the job's size, when output position at is
// wanted, else nil (the picture is only counted). A picture to be scaled is read in place and
// only its scaled copy is stretched to full range: for a thumbnail that is a small fraction of the
// work of copying the whole picture first.
func (s *session) picture(at int, p *decoded) *image.YCbCr {
	if _, ok := s.wantAt[at]; !ok || p.width <= 0 || p.height <= 0 {
		return nil
	}
	cw, ch := (p.width+1)/2, (p.height+1)/2
	if w, h := s.job.Width, s.job.Height; w != p.width || h != p.height {
		view := &image.YCbCr{
			Y:       unsafe.Slice((*byte)(unsafe.Pointer(p.planes[0])), (p.height-1)*p.yStride+p.width),
			Cb:      unsafe.Slice((*byte)(unsafe.Pointer(p.planes[1])), (ch-1)*p.cStride+cw),
			Cr:      unsafe.Slice((*byte)(unsafe.Pointer(p.planes[2])), (ch-1)*p.cStride+cw),
			YStride: p.yStride, CStride: p.cStride, SubsampleRatio: image.YCbCrSubsampleRatio420,
			Rect: image.Rect(0, 0, p.width, p.height),
		}
		pic := decode.Scale(view, w, h)
		if !s.fullRange {
			for i, v := range pic.Y {
				pic.Y[i] = lumaRange[v]
			}
			for i := range pic.Cb {
				pic.Cb[i], pic.Cr[i] = chromaRange[pic.Cb[i]], chromaRange[pic.Cr[i]]
			}
		}
		return pic
	}
	pic := image.NewYCbCr(image.Rect(0, 0, p.width, p.height), image.YCbCrSubsampleRatio420)
	copyPlane(pic.Y, pic.YStride, p.planes[0], p.yStride, p.width, p.height, s.fullRange, lumaRange)
	copyPlane(pic.Cb, pic.CStride, p.planes[1], p.cStride, cw, ch, s.fullRange, chromaRange)
	copyPlane(pic.Cr, pic.CStride, p.planes[2], p.cStride, cw, ch, s.fullRange, chromaRange)
	return pic
}

// copyPlane copies a w×h plane from C memory; studio-range samples (luma 16–235, chroma 16–240)
// are stretched to full range through lut unless the stream is full range already.
func copyPlane(dst []byte, dstStride int, src *C.uchar, srcStride, w, h int, full bool, lut *[256]byte) {
	all := unsafe.Slice((*byte)(unsafe.Pointer(src)), (h-1)*srcStride+w)
	for y := 0; y < h; y++ {
		row, out := all[y*srcStride:y*srcStride+w], dst[y*dstStride:y*dstStride+w]
		if full {
			copy(out, row)
			continue
		}
		for x, v := range row {
			out[x] = lut[v]
		}
	}
}

// Studio to full range: luma (v−16)·255/219, chroma (v−128)·255/224 + 128, rounded and clamped.
var lumaRange, chromaRange = rangeLUT(16, 219, 0), rangeLUT(128, 224, 128)

func rangeLUT(offset, span, base int) *[256]byte {
	var t [256]byte
	for v := range t {
		x := ((v-offset)*255*2+span)/(2*span) + base
		if v < offset && base == 0 {
			x = 0
		}
		t[v] = byte(min(255, max(0, x)))
	}
	return &t
}
