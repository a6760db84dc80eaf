// Package capture turns media inputs into the coded frames kvs uploads, and cuts them into
// keyframe-aligned fragments.
//
// A Source yields coded frames in decode order with its tracks known up front. Sources exist for
// Matroska/WebM (any reader, stdin included), MP4 (progressive and fragmented; needs seeking) and raw
// H.264/H.265 Annex B streams; Open picks one by sniffing the input. A Fragmenter reads a
// Source and returns mkv.Fragments that start at a video keyframe and never split a GOP.
//
// Timestamps are time.Duration from the stream's origin. H.264/H.265 frame data is always 4-byte
// length-prefixed NAL units, and CodecPrivate is an avcC/hvcC record, as Matroska stores them.
package capture

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/openkvs/kvs/mkv"
	"github.com/openkvs/kvs/mkv/codec"
)

// Frame is one coded frame (one access unit for video, one codec frame for audio).
type Frame struct {
	// Track is the mkv.Track.Number the frame belongs to.
	Track uint64
	// PTS is the presentation time from the stream's origin.
	PTS time.Duration
	// DTS is the decode time, non-decreasing per track; across tracks frames come in the order
	// the container interleaves them (the MP4 source merges tracks by DTS). It may be negative
	// for B-frame streams whose first picture is presented at 0. Matroska stores no decode time:
	// the Matroska source sets DTS to the largest PTS seen so far on the track, which is
	// non-decreasing and equals PTS for streams without B-frames.
	DTS time.Duration
	// Keyframe is true when a decoder can start at this frame. For H.264/H.265 it comes from the
	// bitstream (an IDR or IRAP picture), for other codecs from the container.
	Keyframe bool
	// DiscardPadding is decoded audio a player must drop, as in Matroska's DiscardPadding:
	// negative drops that much from the start of the frame's decoded samples, positive from its
	// end. An AAC priming frame (decoded only to prime the decoder; an MP4 edit list starts the
	// presentation after it) has minus its whole duration. 0 for most frames.
	DiscardPadding time.Duration
	// Data is the frame payload; for H.264/H.265 4-byte length-prefixed NAL units. The caller owns
	// it after ReadFrame returns.
	Data []byte
}

// Source yields coded frames in decode order, with its tracks known up front.
//
// A Source is not safe for concurrent use, except that Close may be called at any time to unblock a
// ReadFrame waiting on its input.
type Source interface {
	// Tracks returns the tracks, with CodecPrivate filled in. The caller must not modify them.
	Tracks() []mkv.Track
	// ReadFrame returns the next frame. It returns io.EOF after the last frame. When ctx is done
	// it returns ctx.Err() as soon as the underlying read can be interrupted (sources over files
	// and pipes close their input to unblock).
	ReadFrame(ctx context.Context) (Frame, error)
	// Close releases the input. It is safe to call more than once.
	Close() error
}

// Format is an input container format.
type Format int

// Input formats. FormatAuto sniffs the input.
const (
	FormatAuto   Format = iota
	FormatMKV           // Matroska or WebM
	FormatMP4           // MP4 / ISO BMFF, progressive or fragmented
	FormatAnnexB        // raw H.264 or H.265 Annex B byte stream
)

// String returns the flag spelling of f: "auto", "mkv", "mp4" or "annexb".
func (f Format) String() string {
	switch f {
	case FormatMKV:
		return "mkv"
	case FormatMP4:
		return "mp4"
	case FormatAnnexB:
		return "annexb"
	}
	return "auto"
}

// ErrNeedFrameRate is returned by the Annex B source when the SPS carries no timing info and
// Options.FrameRate is zero.
var ErrNeedFrameRate = errors.New("the stream's SPS carries no frame rate: pass --frame-rate")

// ErrEmptyInput is returned by Open for an input that ends before its first byte (a pipe whose
// writer failed, an empty file).
var ErrEmptyInput = errors.New("the input is empty")

// ErrUnknownFormat is returned when the input's format cannot be told from its first bytes or its
// file name.
var ErrUnknownFormat = errors.New("unknown input format: not Matroska/WebM (EBML), MP4 (ftyp) or Annex B H.264/H.265 (start code); pass --format")

// ErrNoTracks is returned when an input holds no track kvs can carry.
var ErrNoTracks = errors.New("no usable tracks")

// ErrDiscontinuity is returned by ReadFrame between two runs of frames that do not follow each
// other: a camera (RTSP) dropped and was reconnected, or frames had to be dropped, or the tracks
// changed (a new picture size, new parameter sets: from a camera, in a raw H.264/H.265 stream, or
// in concatenated Matroska documents). It is not an end:
// ReadFrame goes on with the frames after it, Tracks may return new tracks from then on, and the
// next video frame is a keyframe. The Fragmenter ends the fragment in progress there and starts
// the next one at that keyframe, with the new tracks.
var ErrDiscontinuity = errors.New("discontinuity: the stream restarted")

// cloneBytes returns a copy of b that does not share its array.
func cloneBytes(b []byte) []byte {
	return append(make([]byte, 0, len(b)), b...)
}

// input is the reader a file Source reads, to be closed: nil when there is nothing to close. It
// gives the Source its Close, and closeInput, which ends a blocked read when a ctx is done.
type input struct{ closer io.Closer }

// closeInput closes the input early; Close reports what closing it says.
func (in input) closeInput() {
	if in.closer != nil {
		in.closer.Close()
	}
}

// Close closes the input.
func (in input) Close() error {
	if in.closer == nil {
		return nil
	}
	return ignoreClosed(in.closer.Close())
}

// ignoreClosed drops the error of closing an input twice (ctx cancellation closes it early).
func ignoreClosed(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// videoTrack returns track 1 of a source that makes H.264 or H.265 itself (a raw stream, a camera,
// an encoder): its CodecPrivate built from the parameter sets (vps for H.265 only) and its size
// from the SPS, which it returns parsed (for the frame rate it may give).
func videoTrack(c codec.Codec, vps, sps, pps []byte) (mkv.Track, codec.SPSInfo, error) {
	info, err := codec.ParseSPS(c, sps)
	if err != nil {
		return mkv.Track{}, info, err
	}
	var priv []byte
	if c == codec.H265 {
		priv, err = codec.BuildHEVCConfig([][]byte{vps}, [][]byte{sps}, [][]byte{pps})
	} else {
		priv, err = codec.BuildAVCConfig([][]byte{sps}, [][]byte{pps})
	}
	if err != nil {
		return mkv.Track{}, info, err
	}
	return mkv.Track{Number: 1, UID: 1, Type: mkv.TrackTypeVideo, CodecID: c.CodecID(), CodecPrivate: priv,
		Width: uint32(info.Width), Height: uint32(info.Height)}, info, nil //nolint:gosec // ParseSPS bounds sizes
}
