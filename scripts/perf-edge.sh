#!/usr/bin/env bash
# perf-edge.sh measures the edge producer for the README: the spool's write bandwidth next to the
# disk's fdatasync bandwidth, and the CPU and memory of `kvs agent` with 16 simulated RTSP cameras
# at 2 Mbit/s, uploading, then spooling while the kvs server is down, then catching up. Run from
# the repository root:
#
#   scripts/perf-edge.sh                     # about 4 minutes
#   KVS_PERF_RUNS=5 scripts/perf-edge.sh     # more runs of the bandwidth figures (default 3)
#   KVS_PERF_DIR=/data/perf KVS_EDGE_CAMERAS=32 KVS_EDGE_MEASURE=120 scripts/perf-edge.sh
#
# KVS_PERF_DIR (default /tmp/kvs-perf) must be on the disk being measured: dd, the spool
# benchmark, the spools and the server's data all go there. The cameras (internal/testcam, one
# process), the kvs server and the agent share the machine: their CPU is reported apart. Needs go,
# ffmpeg/ffprobe, coreutils and awk. Nothing here asserts a figure: it prints them.
set -euo pipefail

WORK=${KVS_PERF_DIR:-/tmp/kvs-perf}
CAMERAS=${KVS_EDGE_CAMERAS:-16}
MEASURE=${KVS_EDGE_MEASURE:-60}  # seconds of each measured phase
OUTAGE=${KVS_EDGE_OUTAGE:-30}    # seconds the server is down
RUNS=${KVS_PERF_RUNS:-3}
EDGE="$WORK/edge"
rm -rf "$EDGE"
mkdir -p "$EDGE"
go build -o "$WORK/kvs" ./cmd/kvs
go build -o "$WORK/testcam" ./internal/testcam/cmd/testcam

. "$(dirname "$0")/lib.sh"
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
# cpu PID SECONDS: the process's CPU use over SECONDS, in % of one core.
cpu() {
	local a b
	a=$(ticks "$1")
	sleep "$2"
	b=$(ticks "$1")
	awk -v a="$a" -v b="$b" -v hz="$HZ" -v s="$2" 'BEGIN { printf "%.1f", (b - a) / hz / s * 100 }'
}

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), dir $WORK on $(df --output=source "$WORK" | tail -1)"

echo "== spool write bandwidth next to the disk's fdatasync bandwidth (512 KiB = a 2 s fragment at 2 Mbit/s), $RUNS alternating runs"
go test -c -o "$WORK/client.test" ./client
DD=() ONE=() SIXTEEN=()
for _ in $(seq "$RUNS"); do
	# dd: each 512 KiB write synced (O_DSYNC), as the spool fdatasyncs each fragment.
	DD+=("$(dd if=/dev/zero of="$EDGE/dd.bin" bs=512K count=400 oflag=dsync 2>&1 | awk '/copied/ { printf "%.0f", $1 / $(NF-3) / 1e6 }')")
	rm -f "$EDGE/dd.bin"
	out=$(KVS_BENCH_DIR="$EDGE" "$WORK/client.test" -test.run '^$' -test.bench 'BenchmarkSpoolAppend' -test.benchtime 400x)
	ONE+=("$(echo "$out" | awk '$1 ~ /^BenchmarkSpoolAppend-/ { printf "%.0f", $(NF-1) }')")
	SIXTEEN+=("$(echo "$out" | awk '$1 ~ /^BenchmarkSpoolAppend16-/ { printf "%.0f", $(NF-1) }')")
done
say "disk, dd bs=512K count=400 oflag=dsync: median $(printf '%s\n' "${DD[@]}" | median) MB/s (runs ${DD[*]})"
say "spool, one camera (BenchmarkSpoolAppend: append + fdatasync, then final): median $(printf '%s\n' "${ONE[@]}" | median) MB/s (runs ${ONE[*]})"
say "spool, 16 cameras at once (BenchmarkSpoolAppend16): median $(printf '%s\n' "${SIXTEEN[@]}" | median) MB/s (runs ${SIXTEEN[*]})"

CLIP="$WORK/cam-2mbit.mkv"
if [ ! -s "$CLIP" ]; then
	echo "== making the camera clip: 20 s of 1280x720 25 fps H.264 CBR 1.94 Mbit/s + AAC 64 kbit/s, 2 s GOP"
	ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
		-c:v libx264 -preset veryfast -b:v 1936k -minrate 1936k -maxrate 1936k -bufsize 1936k -x264-params nal-hrd=cbr \
		-g 50 -keyint_min 50 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 64k -ac 1 "$CLIP"
fi
RATE=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$CLIP")
echo "clip: $CLIP, $(awk -v r="$RATE" 'BEGIN { printf "%.2f", r / 1e6 }') Mbit/s"

PORT_KVS=${KVS_EDGE_PORT:-14567}
PORT_RTSP=${KVS_EDGE_RTSP_PORT:-18554}
start_server() {
	"$WORK/kvs" server --listen "127.0.0.1:$PORT_KVS" --data-dir "$EDGE/data" >"$EDGE/server.out" 2>>"$EDGE/server.log" &
	SERVER=$!
	PIDS+=("$SERVER")
	for _ in $(seq 100); do grep -q "kvs server listening" "$EDGE/server.log" 2>/dev/null && return; sleep 0.1; done
	echo "kvs server did not start"; exit 1
}
start_server
"$WORK/testcam" -clip "$CLIP" -n "$CAMERAS" -addr "127.0.0.1:$PORT_RTSP" >"$EDGE/cameras.txt" 2>"$EDGE/testcam.log" &
CAMS=$!
PIDS+=("$CAMS")
sleep 1

{
	echo "endpoint: http://127.0.0.1:$PORT_KVS"
	echo "cameras:"
	i=0
	while read -r url; do
		i=$((i + 1))
		printf '  - name: cam%d\n    source: %s\n    stream-name: cam%d\n    fragment-duration: 2s\n    spool-dir: %s/spool/cam%d\n    create: true\n' \
			"$i" "$url" "$i" "$EDGE" "$i"
	done <"$EDGE/cameras.txt"
} >"$EDGE/agent.yaml"

echo "== kvs agent, $CAMERAS cameras at 2 Mbit/s, 2 s fragments, each with its spool"
"$WORK/kvs" agent --config "$EDGE/agent.yaml" --status-interval 5s 2>"$EDGE/agent.log" &
AGENT=$!
PIDS+=("$AGENT")
sleep 20 # every camera connected and past its first fragments
C=$(cpu "$AGENT" "$MEASURE")
say "uploading: agent CPU $C% of one core over ${MEASURE} s; RSS $(($(kib "$AGENT" VmRSS) / 1024)) MiB, peak $(($(kib "$AGENT" VmHWM) / 1024)) MiB"
say "  (same time, for scale: kvs server CPU $(cpu "$SERVER" 10)%, the $CAMERAS cameras $(cpu "$CAMS" 10)% over 10 s)"

echo "== the kvs server stops for $OUTAGE s: the agent spools"
kill -TERM "$SERVER"
wait "$SERVER" 2>/dev/null || true
C=$(cpu "$AGENT" "$OUTAGE")
SPOOLED=$(du -sb "$EDGE/spool" | cut -f1)
say "spooling: agent CPU $C% over ${OUTAGE} s; RSS $(($(kib "$AGENT" VmRSS) / 1024)) MiB, peak $(($(kib "$AGENT" VmHWM) / 1024)) MiB; spools $((SPOOLED / 1048576)) MiB"

start_server
BACK=$(date +%s.%N)
echo "== the server is back: the backlog is sent (no --spool-rate: as fast as it goes)"
C0=$(ticks "$AGENT")
for _ in $(seq 600); do
	sleep 1
	# The last status round: caught up when no camera has more than its live fragment in its spool.
	left=$(grep 'msg=status' "$EDGE/agent.log" | tail -n "$CAMERAS" |
		awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^spooled=/) { split($i, kv, "="); if (kv[2] > 1) n++ } } END { print n + 0 }')
	[ "$left" = 0 ] && break
done
C1=$(ticks "$AGENT")
SECS=$(awk -v b="$BACK" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - b }')
say "caught up in ${SECS} s (status lines every 5 s); agent CPU $(awk -v a="$C0" -v b="$C1" -v hz="$HZ" -v s="$SECS" 'BEGIN { printf "%.1f", (b - a) / hz / s * 100 }')% meanwhile"

STOP=$(date +%s.%N)
kill -TERM "$AGENT"
wait "$AGENT" || true
say "SIGTERM: the agent stopped in $(awk -v b="$STOP" -v n="$(date +%s.%N)" 'BEGIN { printf "%.2f", n - b }') s"
grep 'msg="agent stopped"' "$EDGE/agent.log" || true
echo "errors in the agent's log: $(grep -c 'level=ERROR' "$EDGE/agent.log" || true) (ERROR acks of fragments cut by the server's stop are retried)"
TOTAL=0
for i in $(seq "$CAMERAS"); do
	n=$("$WORK/kvs" --endpoint "http://127.0.0.1:$PORT_KVS" list-fragments --stream-name "cam$i" --output numbers | wc -l)
	TOTAL=$((TOTAL + n))
done
echo "fragments stored: $TOTAL over $CAMERAS streams"
