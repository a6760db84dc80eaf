// Package mpegts remuxes KVS fragments (mkv.Fragment: one Matroska cluster with its tracks) into
// MPEG-2 transport stream segments without re-encoding, for HLS sessions whose ContainerFormat is
// MPEG_TS (GetTSFragment): the packaging HLS has had since it began, and the only one some older
// players (set-top boxes, older smart TVs, some HLS libraries) play.
//
// It lives under mkv, next to mkv/fmp4, for the reason fmp4 does: it is a format library, bytes of
// one container in and bytes of another out, with nothing of a server in it. The transport stream
// itself is written by mediacommon's mpegts.Writer (PAT, PMT, PES packetisation, PCR).
//
// # Mapping
//
// A segment is self-contained, as HLS requires of TS segments (there is no EXT-X-MAP): it starts
// with a PAT and a PMT, and carries every codec parameter in band. The tracks are those
// fmp4.Describe accepts (H.264 or H.265 video, optionally AAC audio, with valid CodecPrivate: the
// same errors, so the server answers a session the same KVS exceptions for either container),
// one elementary stream each, PIDs 256, 257, ... in track order. Video frames, stored as
// length-prefixed NAL units, become Annex B access units with an access unit delimiter, and the
// CodecPrivate's parameter sets (SPS and PPS; VPS, SPS and PPS for H.265) go before every
// keyframe that does not carry its own. AAC frames get ADTS headers made from the
// AudioSpecificConfig; a configuration ADTS cannot express (a sampling rate outside its table,
// 960-sample frames) is ErrNotADTS, wrapped in an *fmp4.TrackError with fmp4.ErrUnsupportedCodec.
// Consecutive AAC frames share a PES packet (up to maxAudioPES bytes, as ffmpeg's muxer does): one
// PES per 200-byte frame would cost two 188-byte TS packets per frame.
//
// # Timing
//
// A frame's presentation and decode times are those fmp4.Times gives it, the times of the same
// fragment's fMP4 media segment, converted to the 90 kHz clock: the producer timestamp since the
// Unix epoch. MPEG-TS timestamps have 33 bits, which the epoch-based timeline overflows many times
// over, so they are taken modulo 2^33: they wrap at fixed instants, every 2^33/90000 s (26.5 h).
// That keeps a segment a function of its fragment alone, as fMP4 segments are: the same bytes for
// every session and every node (segments are shared between the requests that want them at
// once), equal, modulo 2^33, to the fMP4 segment's times, and continuous across fragments
// wherever the producer timestamps are. The cost is that a session playing across one of those
// instants sees the timestamps wrap, once (a session lasts at most 12 h); transport stream
// players handle that, as every broadcast stream wraps. Timestamps relative to each session's
// start would never wrap within a session, but would make a segment's bytes depend on the
// session and stop it matching the fMP4 timeline.
package mpegts
