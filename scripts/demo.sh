#!/usr/bin/env bash
# The main job, end to end on the embedded default: build kvs, start `kvs server` with a local data
# directory, create a stream, put the live test pattern into it (a clip from testdata when this
# build has no capture support), list the fragments, write what get-media returns to a file, check
# it with ffprobe when installed, and say how to watch it.
#
#   bash scripts/demo.sh            # 10 s of test pattern into stream "demo"
#   DURATION=30s STREAM=cam1 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STREAM=${STREAM:-demo}
DURATION=${DURATION:-10s}
WORK=${WORK:-./kvs-demo}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

echo "== building kvs"
go build -o "$WORK/kvs" ./cmd/kvs
kvs="$WORK/kvs"

echo "== starting kvs server (data in $WORK/data)"
"$kvs" server --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/server.url" 2>"$WORK/server.log" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/server.url" ] && break; sleep 0.1; done
[ -s "$WORK/server.url" ] || { cat "$WORK/server.log"; echo "server did not start" >&2; exit 1; }
export KVS_ENDPOINT=$(head -1 "$WORK/server.url")
echo "   endpoint $KVS_ENDPOINT"

echo "== create-stream $STREAM"
"$kvs" describe-stream --stream-name "$STREAM" >/dev/null 2>&1 ||
  "$kvs" create-stream --stream-name "$STREAM" --data-retention-in-hours 24 --media-type video/h264

echo "== put-media ($DURATION)"
# (The help text goes through a variable: with pipefail, `--help | grep -q` fails whenever grep
# exits before kvs has written all of it.)
help=$("$kvs" put-media --help 2>/dev/null || true)
if grep -q testsrc <<<"$help" && "$kvs" put-media --stream-name "$STREAM" --source testsrc \
    --duration "$DURATION" --width 640 --height 480 --fps 30 --fragment-duration 1s 2>"$WORK/put.log"; then
  echo "   test pattern sent"
  live_source="--source testsrc --duration 60s"
else
  live_source="--source $PWD/testdata/h264_aac.mp4 --realtime --loop" # no test pattern in this build
  echo "   (no live test pattern in this build: $(tail -1 "$WORK/put.log" 2>/dev/null)) sending testdata/h264_aac.mp4 instead"
  "$kvs" put-media --stream-name "$STREAM" --source testdata/h264_aac.mp4 --fragment-duration 1s
fi

echo "== list-fragments"
"$kvs" list-fragments --stream-name "$STREAM" --output table

echo "== get-media EARLIEST -> $WORK/$STREAM.mkv"
"$kvs" get-media --stream-name "$STREAM" --start-selector EARLIEST --no-follow -o "$WORK/$STREAM.mkv"
if command -v ffprobe >/dev/null; then
  ffprobe -v error -count_frames -show_entries stream=codec_name,width,height,nb_read_frames -of compact=p=0 "$WORK/$STREAM.mkv"
fi
cat <<MSG

Done. Watch what was stored:    ffplay $WORK/$STREAM.mkv

The server stops with this script; its data stays in $WORK/data. To watch live, run each in its own terminal:
  $kvs server --data-dir $WORK/data
  $kvs put-media --stream-name $STREAM $live_source
  $kvs get-media --stream-name $STREAM --start-selector NOW | ffplay -
Server log of this run: $WORK/server.log
MSG
