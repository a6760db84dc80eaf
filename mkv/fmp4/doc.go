// Package fmp4 remuxes KVS fragments (mkv.Fragment: one Matroska cluster with its tracks) into
// fragmented MP4 without re-encoding, for HLS (init segment + one media segment per fragment) and
// GetClip (one MP4 file written fragment by fragment).
//
// It lives under mkv, next to mkv/codec, because it is a format library: bytes of one container
// in, bytes of another out, with nothing of a server in it (no store, no HTTP, no sessions). The
// layering puts format libraries at the bottom (cmd → client | server | capture → mkv), so any
// of them may use it: the server for HLS and GetClip today, a client-side MP4 output tomorrow.
// It was server/fmp4 while only the server used it.
//
// # Mapping
//
// Each Matroska track becomes one MP4 track, track_IDs 1, 2, ... in order: H.264 as avc1 (the
// CodecPrivate is the avcC box, byte for byte), H.265 as hvc1 (the hvcC with its VPS/SPS/PPS
// arrays marked complete, which Apple players require for hvc1; parameter sets repeated in band
// stay valid), AAC as mp4a (the AudioSpecificConfig in an esds). These are the codecs KVS accepts
// for HLS, DASH and GetClip; anything else (VP8, Opus, G.711 among them) is ErrUnsupportedCodec,
// as is a stream with no video track. The server maps the three track errors to
// UnsupportedStreamMediaTypeException, MissingCodecPrivateDataException and
// InvalidCodecPrivateDataException.
//
// # Timing
//
// Matroska stores presentation timestamps, in TimecodeScale ticks relative to the cluster. MP4
// needs decode times and composition offsets. Within one fragment the n-th frame of a video
// track in storage (decode) order gets the n-th smallest presentation time as its decode time,
// moved earlier by the fragment's reorder delay so that no composition offset is negative (trun
// version 0, which every player reads; negative offsets in trun version 1 are not universally
// supported). This is what ffmpeg's Matroska demuxer + MP4 muxer do. Sample durations are decode
// time differences; the last sample of a track lasts its BlockDuration, the DefaultDuration, or
// the mean frame spacing. Video uses a 90 kHz timescale, audio its sampling rate; times are
// converted from nanoseconds with 128-bit intermediate products, so absolute timestamps (the
// HLS timeline is the producer time since the Unix epoch) neither overflow nor drift.
//
// A Matroska DiscardPadding (the AAC priming frame put-media sends from an MP4, marked to be
// decoded and dropped) is not carried: the frame becomes an ordinary sample, so players present
// its decoded output (1024 samples for ffmpeg's AAC) before the audio that follows, and the video
// keeps its time relative to that audio. Fragmented MP4 has no per-sample equivalent: an edit
// list applies to a whole track from the init segment, and ffmpeg 5.1 applies one in a fragmented
// file by moving the track's timestamps, not by dropping decoded samples (an audio edit list 1024
// samples later put the audio 21 ms ahead of the video and still decoded the priming frame).
//
// Each media segment is built from its fragment alone: the caller gives the fragment's position
// on the output timeline. That makes HLS media segments stateless (any fragment can be remuxed
// on request, in any order, by any request) and lets consecutive fragments join without gaps as
// long as their timestamps do.
//
// # Clips
//
// Writer writes init + segments to an io.Writer as the fragments arrive. A fragmented MP4 is a
// valid MP4 file: ffmpeg, browsers, VLC and QuickTime play it, and it needs no seeking back
// (a progressive MP4 needs its moov, with every sample's size, before or after all the data: the
// whole clip in memory or a second pass). Its timeline starts at 0 through an edit list per track
// that hides the reorder-delay shift.
//
// The media segment is written by hand (moof, mfhd, traf, tfhd, tfdt, trun, mdat: a few dozen
// bytes of headers per track) straight into the caller's buffer, so remuxing a fragment is one
// copy of its frame data; the init segment is built with github.com/Eyevinn/mp4ff.
package fmp4
