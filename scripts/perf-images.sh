#!/usr/bin/env bash
# perf-images.sh measures GetImages on 1080p H.264 keyframes: images per second per core (images /
# CPU seconds of kvs server and the ffmpeg processes it starts) and per second of wall time, for
# kvs server with OpenH264 in process (the default cgo build) and with ffmpeg (a CGO_ENABLED=0
# build), at full size and as 320x180 thumbnails (in one request, and one request per image as the
# console asks), next to ffmpeg alone decoding the same keyframes to JPEG in one run. Run from the repository root (scripts/perf.sh runs it last):
#
#   scripts/perf-images.sh
#
# The input is perf.sh's: 80 s of 1080p30 H.264 at 20 Mbit/s with a keyframe every 2 s, put into
# the server in 2 s fragments, so 40 samples 2 s apart are 40 keyframes. Each server runs with its
# defaults (ImageDecodes: half the cores); each run asks for another JPEG quality (90, 89, ...; 70,
# 69, ... one per request), so that no run is served from the server's picture cache. Needs go, ffmpeg, GNU date and awk; prints,
# asserts nothing.
set -euo pipefail

WORK=${KVS_PERF_DIR:-/tmp/kvs-perf}
RUNS=${KVS_PERF_RUNS:-5}
mkdir -p "$WORK"
. "$(dirname "$0")/lib.sh"
IN="$WORK/in-1080p.mkv"
perf_input "$IN"
go build -o "$WORK/kvs" ./cmd/kvs
CGO_ENABLED=0 go build -o "$WORK/kvs-nocgo" ./cmd/kvs

TCK=$(getconf CLK_TCK)
# cpu PID: CPU seconds of the process and of its children it has waited for (the ffmpeg runs).
cpu() { awk -v t="$TCK" '{ printf "%.3f\n", ($14 + $15 + $16 + $17) / t }' "/proc/$1/stat"; }

echo "== machine: $(nproc) cores, $(ffmpeg -version | head -1 | cut -d' ' -f1-3), load average $(la)"

echo "== reference: ffmpeg -threads 1 -skip_frame nokey -i IN -fps_mode passthrough [-vf scale=320:180] -f image2pipe -c:v mjpeg -q:v 3 -, $RUNS runs"
for size in full 320x180; do
	vf=()
	[ "$size" = full ] || vf=(-vf "scale=${size/x/:}")
	: >"$WORK/ref.cpu"
	for _ in $(seq "$RUNS"); do
		TIMEFORMAT='%U %S'
		{ time ffmpeg -v error -threads 1 -skip_frame nokey -i "$IN" -fps_mode passthrough "${vf[@]}" \
			-f image2pipe -c:v mjpeg -q:v 3 - >"$WORK/ref.jpg"; } 2>"$WORK/ref.time"
		awk '{ print $1 + $2 }' "$WORK/ref.time" >>"$WORK/ref.cpu"
	done
	n=$(ffprobe -v error -count_frames -show_entries stream=nb_read_frames -of csv=p=0 -f mjpeg "$WORK/ref.jpg")
	c=$(median <"$WORK/ref.cpu")
	printf 'ffmpeg alone, %-8s %d images, %s CPU s: %.1f images/s per core   [load average %s]\n' "$size:" "$n" "$c" \
		"$(awk -v n="$n" -v c="$c" 'BEGIN { print n / c }')" "$(la)"
done

for build in kvs kvs-nocgo; do
	rm -f "$WORK/images.url"
	"$WORK/$build" server --listen 127.0.0.1:0 --memory --log-level info >"$WORK/images.url" 2>"$WORK/images-server.log" &
	PID=$!
	trap 'kill -INT $PID 2>/dev/null || true' EXIT
	for _ in $(seq 100); do [ -s "$WORK/images.url" ] && break; sleep 0.1; done
	URL=$(head -1 "$WORK/images.url")
	echo "== $build server: $(grep -o 'GetImages decoders.*' "$WORK/images-server.log")"
	"$WORK/$build" --endpoint "$URL" put-media --stream-name img --source "$IN" --create --fragment-duration 2s >/dev/null 2>&1
	T0=$("$WORK/$build" --endpoint "$URL" list-fragments --stream-name img --timestamp-type producer --output json |
		awk -F'"' '/ProducerTimestamp/ { print $4; exit }')
	START=$(date -u -d "$T0" +%s.%3N)
	END=$(awk -v s="$START" 'BEGIN { printf "%.3f", s + 79 }')
	# full and 320x180: one get-images for the 40 samples (pages of 25); single: 320x180, one request
	# per image, as the console's thumbnails ask.
	for mode in full 320x180 single; do
		flags=()
		[ "$mode" = full ] || flags=(--width-pixels 320 --height-pixels 180)
		: >"$WORK/kvs.cpu"
		: >"$WORK/kvs.wall"
		for r in $(seq "$RUNS"); do
			rm -rf "$WORK/images"
			c0=$(cpu "$PID")
			t0=$(now)
			if [ "$mode" = single ]; then
				for k in $(seq 0 39); do
					at=$(awk -v s="$START" -v k="$k" 'BEGIN { printf "%.3f", s + 2 * k }')
					"$WORK/$build" --endpoint "$URL" --log-level warn get-images --stream-name img --start "$at" --end "$at" \
						--jpeg-quality $((71 - r)) "${flags[@]}" -o "$WORK/images/$k" >/dev/null
				done
			else
				"$WORK/$build" --endpoint "$URL" --log-level warn get-images --stream-name img --start "$START" --end "$END" \
					--interval 2s --jpeg-quality $((91 - r)) "${flags[@]}" -o "$WORK/images" >/dev/null
			fi
			t1=$(now)
			c1=$(cpu "$PID")
			awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }' >>"$WORK/kvs.cpu"
			awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' >>"$WORK/kvs.wall"
		done
		n=$(find "$WORK/images" -name '*.jpg' | wc -l)
		c=$(median <"$WORK/kvs.cpu")
		w=$(median <"$WORK/kvs.wall")
		printf '%-9s %-8s %d images, server CPU %s s: %.1f images/s per core; %.2f s wall: %.1f images/s   [load average %s]\n' \
			"$build," "$mode:" "$n" "$c" "$(awk -v n="$n" -v c="$c" 'BEGIN { print n / c }')" "$w" \
			"$(awk -v n="$n" -v w="$w" 'BEGIN { print n / w }')" "$(la)"
	done
	kill -INT "$PID"
	wait "$PID" || true
	trap - EXIT
done
