#!/usr/bin/env bash
# perf-curves.sh measures what a kvs server costs as the load grows, to size a machine: server CPU
# (cores) and peak RSS against the number of streams (2 Mbit/s each) and against the bitrate (a
# fixed number of streams), each point a fresh `kvs server` (FS store, fdatasync per fragment)
# driven by `kvs bench --endpoint` from another process on the same machine. Run from the
# repository root:
#
#   scripts/perf-curves.sh                  # about 8 minutes
#   KVS_CURVE_STREAMS="100 500" KVS_CURVE_BITRATES="2Mbps" KVS_CURVE_DURATION=30s scripts/perf-curves.sh
#   KVS_CURVE_STREAMS=1000 KVS_CURVE_BITRATES= scripts/perf-curves.sh    # one point (empty: no curve)
#   KVS_SERVER_FLAGS="--written-cache all" ...     # more `kvs server` flags
#
# It prints one Markdown table row per point with the load average at its end (the README's
# "Cost curves" tables come from here). Server CPU is given twice: the server process's
# user+system time from /proc over the whole bench (set-up, streaming, drain and deleting the
# streams) divided by the streaming time, and kvs bench's server_cores, the CPU per second of the
# steady state (from when every producer is sending to the last fragment sent), which is what the
# load itself costs; peak RSS is its VmHWM. The generator's own CPU is given too: on a 2-core
# machine the two share the cores, so past about 1.5 cores together the latencies say more about
# the machine than the server.
# KVS_PERF_DIR (default /tmp/kvs-perf) must be on the disk being measured. Nothing here asserts a
# figure.
set -euo pipefail

WORK=${KVS_PERF_DIR:-/tmp/kvs-perf}/curves
STREAMS=${KVS_CURVE_STREAMS-"100 200 300 500 700 1000"}
BITRATES=${KVS_CURVE_BITRATES-"0.5Mbps 1Mbps 2Mbps 5Mbps 10Mbps 20Mbps"}
BITRATE_STREAMS=${KVS_CURVE_BITRATE_STREAMS:-50}
DURATION=${KVS_CURVE_DURATION:-20s}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$WORK"
KVS="$WORK/kvs"
go build -o "$KVS" ./cmd/kvs
TCK=$(getconf CLK_TCK)

. "$(dirname "$0")/lib.sh"
trap stop_server EXIT

# point STREAMS BITRATE: one fresh server, one bench; prints a table row.
point() {
	local n=$1 rate=$2 dir="$WORK/data"
	rm -rf "$dir"
	mkdir -p "$dir"
	# Let the writeback of the point before finish first.
	sync
	sleep 5
	# shellcheck disable=SC2086 # KVS_SERVER_FLAGS is split into words on purpose
	"$KVS" server --listen 127.0.0.1:0 --data-dir "$dir" --log-level warn ${KVS_SERVER_FLAGS:-} >"$WORK/server.url" 2>"$WORK/server.log" &
	SERVER_PID=$!
	for _ in $(seq 100); do [ -s "$WORK/server.url" ] && break; sleep 0.1; done
	local url c0 c1
	url=$(head -1 "$WORK/server.url")
	c0=$(ticks "$SERVER_PID")
	/usr/bin/time -f "%U %S" -o "$WORK/bench.time" "$KVS" --endpoint "$url" bench --streams "$n" --bitrate "$rate" \
		--fragment-duration 1s --duration "$DURATION" --server-pid "$SERVER_PID" --output json \
		>"$WORK/bench.json" 2>"$WORK/bench.log" || echo "kvs bench exited $? (see $WORK/bench.log)"
	c1=$(ticks "$SERVER_PID")
	stop_server
	python3 - "$WORK/bench.json" "$WORK/bench.time" "$c0" "$c1" "$TCK" "$rate" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
user, sys_ = map(float, open(sys.argv[2]).read().split()[-2:])
c0, c1, ticks = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
d = j["duration_s"] or 1
cpu = (c1 - c0) / ticks
rss = j["peak_rss_mb"] or 0
steady = j.get("server_cores")
steady = f"{steady:.2f}" if steady is not None else "–"
print(f"| {j['streams']} | {sys.argv[6]} | {j['ingest_mbps']:.0f} | {cpu / d:.2f} / {steady} | {rss:.0f} ({rss / j['streams']:.2f}) "
      f"| {(user + sys_) / d:.2f} | {j['errors']} | {j['persisted_ack_ms']['p50']:.1f} / {j['persisted_ack_ms']['p99']:.1f} "
      f"| {j['delivery_ms']['p50']:.1f} / {j['delivery_ms']['p99']:.1f} | {j['load_avg']} |")
PY
}

header() {
	echo "| Streams | Bitrate | Ingest Mbit/s | Server CPU (cores): whole run / steady | Server peak RSS MB (per stream) | Generator CPU (cores) | Errors | PERSISTED p50 / p99 ms | Delivery p50 / p99 ms | Load average |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
}

echo "== machine: $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), dir $WORK on $(df --output=source "$WORK" | tail -1)"
echo "== streams × 2 Mbit/s × 1 s fragments, $DURATION"
header
for n in $STREAMS; do point "$n" 2Mbps; done
echo "== $BITRATE_STREAMS streams × bitrate, 1 s fragments, $DURATION"
header
for r in $BITRATES; do point "$BITRATE_STREAMS" "$r"; done
