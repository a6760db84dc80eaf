package cmd

import (
	"context"
	"log/slog"
	"strings"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/internal/decode/openh264"
	"github.com/openkvs/kvs/mkv/codec"
	"github.com/openkvs/kvs/server"
)

// imageDecoder builds the decoder of kvs server's GetImages: OpenH264 in process where this build
// has it (cgo without the x264 tag: H.264 without starting a program per request), then the
// ffmpeg on PATH (H.265, and H.264 that OpenH264 cannot decode or without OpenH264). It logs one
// line saying what GetImages can decode, at warn level when something is missing, with the fix.
func imageDecoder(ctx context.Context, log *slog.Logger) server.ImageDecoder {
	var chain decode.Chain
	var missing []string
	if oh, err := openh264.New(); err == nil {
		chain = append(chain, oh)
	} else {
		missing = append(missing, err.Error())
	}
	if ff, err := decode.NewFFmpeg(""); err != nil {
		missing = append(missing, "no ffmpeg on PATH: install it (apt-get install ffmpeg, brew install ffmpeg) and restart kvs server")
	} else if err := ff.Probe(ctx); err != nil {
		missing = append(missing, err.Error())
	} else {
		chain = append(chain, ff)
	}
	by := func(c codec.Codec) string {
		var names []string
		for _, d := range chain {
			if d.Decodes(c) {
				names = append(names, d.String())
			}
		}
		if len(names) == 0 {
			return "none"
		}
		return strings.Join(names, ", then ")
	}
	h264, h265 := by(codec.H264), by(codec.H265)
	if h264 == "none" || h265 == "none" {
		log.Warn("GetImages decoders", "h264", h264, "h265", h265, "missing", strings.Join(missing, "; "))
	} else {
		log.Info("GetImages decoders", "h264", h264, "h265", h265)
	}
	return chain
}
