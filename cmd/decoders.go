package cmd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/openh264"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/server"
)

// imageDecoder builds the decoder of kvs server's GetImages from OpenH264 in process, where this
// build has it (cgo without the x264 tag), and the ffmpeg on PATH (H.265, and H.264 that OpenH264
// cannot decode). With both, H.264 jobs under 10 frames (a thumbnail, a latest image) go to
// OpenH264, which spares ffmpeg's start (about 80 ms of CPU, more than decoding a 1080p keyframe),
// and bigger ones to ffmpeg, whose decoder is faster once started (scripts/perf-images.sh: 43
// against 11 images/s per core one image per request, 47 against 70 for 40 thumbnails in one).
// It logs one line saying what GetImages can decode, at warn level when something is missing,
// with the fix.
func imageDecoder(ctx context.Context, log *slog.Logger) server.ImageDecoder {
	var oh, ff decode.Decoder
	var missing []string
	if d, err := openh264.New(); err == nil {
		oh = d
	} else {
		missing = append(missing, err.Error())
	}
	if d, err := decode.NewFFmpeg(""); err != nil {
		missing = append(missing, "no ffmpeg on PATH: install it (apt-get install ffmpeg, brew install ffmpeg) and restart kvs server")
	} else if err := d.Probe(ctx); err != nil {
		missing = append(missing, err.Error())
	} else {
		ff = d
	}
	dec := decode.Combine(oh, ff)
	by := func(c codec.Codec) string {
		switch {
		case oh != nil && oh.Decodes(c) && ff != nil && ff.Decodes(c):
			return fmt.Sprintf("%s for jobs under %d frames, %s for bigger ones (each falling back on the other)", oh, decode.SplitFrames, ff)
		case oh != nil && oh.Decodes(c):
			return oh.String()
		case ff != nil && ff.Decodes(c):
			return ff.String()
		}
		return "none"
	}
	h264, h265 := by(codec.H264), by(codec.H265)
	if h264 == "none" || h265 == "none" {
		log.Warn("GetImages decoders", "h264", h264, "h265", h265, "missing", strings.Join(missing, "; "))
	} else {
		log.Info("GetImages decoders", "h264", h264, "h265", h265)
	}
	return dec
}

// probeImageDecoder returns imageDecoder's decoder at once and builds it in the background, so
// that kvs server listens without waiting for the ffmpeg probe (an ffmpeg start: about 65 ms
// here between the log's "store recovery" and "GetImages decoders" lines, most of kvs server's
// start on an empty data directory). GetImages waits for the probe when it needs the decoder
// before the probe is done.
func probeImageDecoder(ctx context.Context, log *slog.Logger) server.ImageDecoder {
	l := &lazyDecoder{done: make(chan struct{})}
	go func() {
		l.dec = imageDecoder(ctx, log)
		close(l.done)
	}()
	return l
}

// lazyDecoder is a decoder still being built: each method waits until it is (Decode as long as
// its context lets it).
type lazyDecoder struct {
	done chan struct{}
	dec  server.ImageDecoder // set before done closes
}

func (l *lazyDecoder) Decodes(c codec.Codec) bool {
	<-l.done
	return l.dec.Decodes(c)
}

func (l *lazyDecoder) Decode(ctx context.Context, job *decode.Job) ([][]byte, error) {
	select {
	case <-l.done:
		return l.dec.Decode(ctx, job)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *lazyDecoder) String() string {
	<-l.done
	return l.dec.String()
}
