#!/usr/bin/env bash
# Regenerates the golden clips in testdata/ (Debian 12 ffmpeg 5.1). Each command is exactly what made
# the checked-in file; run from anywhere: bash testdata/make.sh
set -euo pipefail
cd "$(dirname "$0")"
ff=(ffmpeg -hide_banner -loglevel error -y)
# H.264 only, with B-frames (x264 default preset: 3 B-frames), 320x240, 25 fps, 4 s = 100 frames,
# keyframe every 25 frames (1 s) so fragments can be cut every second.
"${ff[@]}" -f lavfi -i testsrc=size=320x240:rate=25 -t 4 -c:v libx264 -preset veryfast -profile:v high \
  -g 25 -keyint_min 25 -sc_threshold 0 -bf 3 -pix_fmt yuv420p -metadata creation_time=2020-01-01T00:00:00Z \
  -fflags +bitexact -flags:v +bitexact h264.mkv
# The same, 2 s = 50 frames: the second clip of a camera whose picture size changes.
"${ff[@]}" -f lavfi -i testsrc=size=320x240:rate=25 -t 2 -c:v libx264 -preset veryfast -profile:v high \
  -g 25 -keyint_min 25 -sc_threshold 0 -bf 3 -pix_fmt yuv420p -metadata creation_time=2020-01-01T00:00:00Z \
  -fflags +bitexact -flags:v +bitexact h264_2s.mkv
# A smaller picture, no B-frames, 2 s: a camera whose resolution changes plays this, then h264_2s.mkv.
"${ff[@]}" -f lavfi -i testsrc=size=160x120:rate=25 -t 2 -c:v libx264 -preset veryfast -profile:v high \
  -g 25 -keyint_min 25 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -metadata creation_time=2020-01-01T00:00:00Z \
  -fflags +bitexact -flags:v +bitexact h264_160x120.mkv
# The same video as raw Annex B (frame rate in the SPS VUI timing: 25 fps).
"${ff[@]}" -i h264.mkv -c:v copy -bsf:v h264_mp4toannexb -f h264 h264.h264
# H.264 + AAC in MP4, 4 s: 100 video frames, 48 kHz mono sine.
"${ff[@]}" -f lavfi -i testsrc=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 4 \
  -c:v libx264 -preset veryfast -g 25 -keyint_min 25 -sc_threshold 0 -bf 2 -pix_fmt yuv420p \
  -c:a aac -b:a 64k -ac 1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact h264_aac.mp4
# The same as Matroska.
"${ff[@]}" -i h264_aac.mp4 -c copy -fflags +bitexact h264_aac.mkv
# H.265 only, 320x240, 25 fps, 2 s = 50 frames, keyframe every 25 frames.
"${ff[@]}" -f lavfi -i testsrc=size=320x240:rate=25 -t 2 -c:v libx265 -preset ultrafast \
  -x265-params keyint=25:min-keyint=25:scenecut=0:log-level=error -pix_fmt yuv420p -fflags +bitexact h265.mkv
"${ff[@]}" -i h265.mkv -c:v copy -bsf:v hevc_mp4toannexb -f hevc h265.h265
# VP8 in WebM, 2 s = 50 frames.
"${ff[@]}" -f lavfi -i testsrc=size=320x240:rate=25 -t 2 -c:v libvpx -g 25 -b:v 200k -fflags +bitexact webm_vp8.webm
# KVS-style concatenated stream: one self-contained MKV document per 1 s fragment, concatenated the way
# GetMedia returns chunks (EBML header + unknown-size Segment, repeated; live=1 gives unknown sizes).
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"${ff[@]}" -i h264.mkv -c copy -f segment -segment_time 1 -segment_format matroska -segment_format_options live=1 -reset_timestamps 0 \
  "$tmp/frag%03d.mkv"
cat "$tmp"/frag*.mkv > concatenated.mkv
ls -l
