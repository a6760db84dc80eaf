//go:build !cgo || x264

package openh264

import (
	"context"
	"errors"

	"github.com/openkvs/kvs/internal/decode"
	"github.com/openkvs/kvs/mkv/codec"
)

// Decoder is the OpenH264 decoder; this build has none (see New).
type Decoder struct{}

// New reports that this binary has no embedded H.264 decoder: it was built without cgo, or with
// the x264 tag (OpenH264 and x264 cannot be linked into one binary).
func New() (*Decoder, error) {
	return nil, errors.New("openh264: not in this build (built without cgo, or with -tags x264)")
}

// Decodes reports false: there is no decoder.
func (*Decoder) Decodes(codec.Codec) bool { return false }

// Decode fails: there is no decoder.
func (*Decoder) Decode(context.Context, *decode.Job) ([][]byte, error) {
	return nil, errors.New("openh264: not in this build")
}

func (*Decoder) String() string { return "openh264 (not in this build)" }
