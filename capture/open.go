package capture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/openkvs/kvs/mkv/codec"
)

// Options configures how an input is opened. The zero value sniffs everything.
type Options struct {
	// Format forces the container format instead of sniffing it (flag --format).
	Format Format
	// Codec forces the codec of an Annex B input (H.264 or H.265) instead of detecting it from the
	// file extension and the first parameter set. An input whose format cannot be sniffed is then
	// read as Annex B: a stream joined inside a NAL unit, whose bytes before the first start code
	// are dropped.
	Codec codec.Codec
	// FrameRate is the frame rate of an Annex B input, in frames per second (flag --frame-rate):
	// it overrides the SPS timing info, which may be wrong, and is needed when the SPS carries
	// none. Zero means "take it from the SPS".
	FrameRate float64
	// Notice, if set, receives recoverable oddities (an unsupported track skipped, frames dropped
	// before the first keyframe). It is called synchronously.
	Notice func(msg string)
}

func (o *Options) notice(format string, args ...any) {
	if o.Notice != nil {
		o.Notice(fmt.Sprintf(format, args...))
	}
}

// Sniff tells the format of an input from its first bytes (16 are enough): the EBML magic for
// Matroska/WebM, an ISO BMFF box type at offset 4 for MP4, a start code for Annex B. It returns
// FormatAuto when it cannot tell.
func Sniff(head []byte) Format {
	if len(head) >= 4 && bytes.Equal(head[:4], []byte{0x1A, 0x45, 0xDF, 0xA3}) {
		return FormatMKV
	}
	if len(head) >= 8 {
		switch string(head[4:8]) {
		case "ftyp", "styp", "moov", "moof", "mdat", "free", "skip", "wide", "sidx":
			return FormatMP4
		}
	}
	i := 0
	for i < len(head) && head[i] == 0 {
		i++
	}
	if i >= 2 && i < len(head) && head[i] == 1 {
		return FormatAnnexB
	}
	return FormatAuto
}

// formatFromName tells the format and, for Annex B, the codec from a file extension.
func formatFromName(name string) (Format, codec.Codec) {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".mkv", ".mka", ".webm", ".mk3d":
		return FormatMKV, 0
	case ".mp4", ".m4v", ".m4a", ".mov", ".cmfv", ".cmfa", ".m4s":
		return FormatMP4, 0
	case ".h264", ".264", ".avc", ".h26l":
		return FormatAnnexB, codec.H264
	case ".h265", ".265", ".hevc":
		return FormatAnnexB, codec.H265
	}
	return FormatAuto, 0
}

// Open opens the media read from r, a file or a stream (standard input, a pipe, a socket):
// Matroska, WebM, MP4 or Annex B, sniffed from the first bytes (else told by name's extension)
// unless opts.Format is set. name is used in errors and for the extension hint ("-" for stdin). MP4
// needs seeking (its index, moov, may come after the media): r must then be an io.ReadSeeker that
// really seeks, such as an *os.File of a regular file; from a stream it is refused with an error
// saying how to feed it instead (buffering a whole stream to a temp file was judged worse than a
// clear message). The Source closes r on Close if r is an io.Closer.
func Open(ctx context.Context, r io.Reader, name string, opts Options) (Source, error) {
	var c io.Closer
	if rc, ok := r.(io.Closer); ok {
		c = rc
	}
	return open(ctx, r, c, name, opts)
}

func open(ctx context.Context, r io.Reader, closer io.Closer, name string, opts Options) (Source, error) {
	format := opts.Format
	br := bufio.NewReaderSize(r, 64<<10)
	if format == FormatAuto {
		head, err := br.Peek(16)
		if err != nil && !errors.Is(err, io.EOF) && len(head) == 0 {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(head) == 0 {
			return nil, fmt.Errorf("%s: %w", name, ErrEmptyInput)
		}
		format = Sniff(head)
		if format == FormatAuto {
			format, _ = formatFromName(name)
		}
		if format == FormatAuto && opts.Codec != 0 {
			// The codec of an Annex B stream was given: a stream joined inside a NAL unit (a
			// FIFO, a UDP socket a camera already streams to) does not start with a start code.
			format = FormatAnnexB
		}
	}
	if opts.Codec == 0 {
		if _, c := formatFromName(name); c != 0 {
			opts.Codec = c
		}
	}
	switch format {
	case FormatMKV:
		src, err := NewMKVSource(ctx, br, closer, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return src, nil
	case FormatMP4:
		rs, ok := r.(io.ReadSeeker)
		if !ok || r == os.Stdin || !seekable(rs) {
			return nil, fmt.Errorf("%s: MP4 input needs seeking and cannot be read from a pipe: pass the file path, or remux to Matroska first (ffmpeg -i in.mp4 -c copy -f matroska -)", name)
		}
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		src, err := NewMP4Source(rs, closer, opts)
		if errors.As(err, new(mp4DecodeError)) {
			return nil, fmt.Errorf("%s: %w; if ffmpeg plays it, send it remuxed to Matroska: ffmpeg -i %s -c copy -f matroska - | kvs put-media --source - ...", name, err, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return src, nil
	case FormatAnnexB:
		src, err := NewAnnexBSource(ctx, br, closer, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return src, nil
	}
	return nil, fmt.Errorf("%s: %w", name, ErrUnknownFormat)
}

// seekable reports whether rs really seeks (os.File of a pipe implements Seek but fails).
func seekable(rs io.ReadSeeker) bool {
	_, err := rs.Seek(0, io.SeekCurrent)
	return err == nil
}
