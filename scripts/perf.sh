#!/usr/bin/env bash
# perf.sh reproduces the figures of the README's Performance section, each next to its reference,
# with the load average at the time of each measurement. Run from the repository root:
#
#   scripts/perf.sh                 # everything (about 18 minutes; scripts/perf-images.sh alone: GetImages;
#                                   # scripts/perf-curves.sh: server CPU and RSS against streams and bitrate;
#                                   # scripts/perf-ab.sh REV: put-media and get-fragments against a commit)
#   KVS_PERF_STREAMS="200" KVS_PERF_DURATION=30s KVS_PERF_RUNS=3 scripts/perf.sh
#
# put-media, its ffmpeg reference and get-fragments run KVS_PERF_RUNS times each (default 5,
# alternating) and report the median: on a shared 2-core VM single runs vary by ±30%.
# KVS_CPUPROFILE=/tmp/kvs.%p.prof on any kvs command writes a CPU profile per process, and
# KVS_TRACE=/tmp/kvs.%p.trace an execution trace (go tool trace: where goroutines wait).
#
# KVS_PERF_DIR (default /tmp/kvs-perf) must be on the disk being measured: the input file, the
# server's data, the ffmpeg copy and the dd reference all go there. Needs go, ffmpeg, coreutils and awk.
# Nothing here asserts a figure: it prints them.
set -euo pipefail

WORK=${KVS_PERF_DIR:-/tmp/kvs-perf}
STREAMS=${KVS_PERF_STREAMS:-"200 300 400 500 1000"}
DURATION=${KVS_PERF_DURATION:-30s}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$WORK"
KVS="$WORK/kvs"
go build -o "$KVS" ./cmd/kvs

. "$(dirname "$0")/lib.sh"
# timed FILE CMD...: runs CMD and appends its wall-clock seconds to FILE.
timed() {
	local t0
	t0=$(now)
	"${@:2}"
	awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }' >>"$1"
}
# alternate OUT A B: $RUNS times (i is the run, 1 to $RUNS), runs the commands A and B, in turn,
# each after removing OUT and syncing, and keeps their seconds in $WORK/A.times and $WORK/B.times.
alternate() {
	local out=$1 cmd
	shift
	for cmd in "$@"; do : >"$WORK/$cmd.times"; done
	for i in $(seq "$RUNS"); do
		for cmd in "$@"; do
			rm -f "$out"
			sync
			timed "$WORK/$cmd.times" "$cmd"
		done
	done
}
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
trap stop_server EXIT

echo "== machine: $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), dir $WORK on $(df --output=source "$WORK" | tail -1)"

echo "== disk reference: dd 512 MiB + fdatasync"
dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=512 conv=fdatasync 2>&1 | tail -1
rm -f "$WORK/dd.bin"
say "(dd)"

IN="$WORK/in-1080p.mkv"
perf_input "$IN"
SIZE=$(stat -c %s "$IN")
echo "input: $IN, $SIZE bytes"

RUNS=${KVS_PERF_RUNS:-5}
# gobench runs `go test -run '^$' -bench ...` with the given arguments and prints the benchmark
# lines, and a failing benchmark's message, without ending the script: the figures after it still
# get measured.
gobench() {
	go test -count 1 -run '^$' "$@" 2>&1 | grep -E '^(Benchmark|--- FAIL|    [a-z_]+\.go:[0-9]+:)' ||
		echo "(go test -bench $* failed: see the lines above)"
}

echo "== kvs server (FS store, fdatasync per append) for put-media and get-fragments"
rm -rf "$WORK/data"
"$KVS" server --listen 127.0.0.1:0 --data-dir "$WORK/data" --log-level warn >"$WORK/server.url" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/server.url" ] && break; sleep 0.1; done
URL=$(head -1 "$WORK/server.url")

# put-media and its reference alternate, $RUNS times each, so that both see the same machine;
# each run writes a new stream (or file) and ends when it is on disk.
echo "== $RUNS × (ffmpeg -i IN -c copy -f matroska OUT && sync OUT) and $RUNS × kvs put-media (a new stream each)"
ref() {
	ffmpeg -v error -y -i "$IN" -c copy -f matroska "$WORK/copy.mkv"
	sync "$WORK/copy.mkv"
}
put() { "$KVS" --endpoint "$URL" put-media --stream-name "perf$i" --source "$IN" --create --fragment-duration 2s >/dev/null; }
alternate "$WORK/copy.mkv" ref put
REF=$(median <"$WORK/ref.times")
PUT=$(median <"$WORK/put.times")
say "ffmpeg copy+sync: median ${REF} s ($(mbps "$SIZE" "$REF") MiB/s); runs: $(tr '\n' ' ' <"$WORK/ref.times")"
say "kvs put-media:    median ${PUT} s ($(mbps "$SIZE" "$PUT") MiB/s), $(ratio "$PUT" "$REF")x the ffmpeg copy; runs: $(tr '\n' ' ' <"$WORK/put.times")"

echo "== $RUNS × kvs get-fragments --parallel 8 --format raw -o /dev/null (the whole first stream)"
STORED=$("$KVS" --endpoint "$URL" list-fragments --stream-name perf1 --output json | awk -F: '/FragmentSizeInBytes/ { s += $2 } END { print s }')
: >"$WORK/get.times"
for i in $(seq "$RUNS"); do
	timed "$WORK/get.times" "$KVS" --endpoint "$URL" get-fragments --stream-name perf1 --parallel 8 --format raw -o /dev/null
done
GET=$(median <"$WORK/get.times")
say "kvs get-fragments: median ${GET} s for $STORED bytes ($(awk -v n="$STORED" -v s="$GET" 'BEGIN { printf "%.0f", n / 1e6 / s }') MB/s); runs: $(tr '\n' ' ' <"$WORK/get.times")"

# To a file next to cp of the same bytes (the first get-fragments' output), alternating.
echo "== $RUNS × (kvs get-fragments --parallel 8 --format raw -o FILE) and $RUNS × (cp of that file)"
"$KVS" --endpoint "$URL" get-fragments --stream-name perf1 --parallel 8 --format raw -o "$WORK/frags.ref"
getfile() { "$KVS" --endpoint "$URL" get-fragments --stream-name perf1 --parallel 8 --format raw -o "$WORK/frags.out"; }
copy() { cp "$WORK/frags.ref" "$WORK/frags.out"; }
alternate "$WORK/frags.out" getfile copy
GETF=$(median <"$WORK/getfile.times")
CP=$(median <"$WORK/copy.times")
say "cp of the same bytes:      median ${CP} s; runs: $(tr '\n' ' ' <"$WORK/copy.times")"
say "kvs get-fragments to FILE: median ${GETF} s, $(ratio "$GETF" "$CP")x cp; runs: $(tr '\n' ' ' <"$WORK/getfile.times")"
rm -f "$WORK/frags.ref" "$WORK/frags.out"
stop_server

echo "== ListFragments: 1000-result time range over 1 M fragments (FS store, through HTTP)"
rm -rf "$WORK/big"
KVS_BIG_INDEX_DIR="$WORK/big" go test -count 1 -run TestMakeBigIndex ./server/store/ >/dev/null
KVS_BIG_INDEX_DIR="$WORK/big" gobench -bench ListFragments -benchmem ./server/
say "(ListFragments)"
gobench -bench 'TimeRange' ./server/store/
say "(store TimeRange, the same lookup without HTTP)"
rm -rf "$WORK/big"

echo "== GetImages: 1080p H.264 keyframes to JPEG, kvs server next to ffmpeg alone (scripts/perf-images.sh)"
KVS_PERF_DIR="$WORK" KVS_PERF_RUNS="$RUNS" "$(dirname "$0")/perf-images.sh"

echo "== Go benchmarks: PutMedia handler, GetMedia fan-out, store appends, mkv"
gobench -bench 'PutMedia|GetMediaFanout' -benchmem ./server/
say "(server)"
# Server CPU per GB of bulk ingest (200 MB, 40 fragments) next to a bare HTTP handler writing the
# same body to a file with fdatasync, each in a child process, alternating (kvs/ref is the ratio).
gobench -bench 'IngestCPU' -benchtime "${RUNS}x" ./server/
say "(ingest CPU vs reference handler)"
gobench -bench 'Append|DiskFdatasync' -benchmem ./server/store/
say "(store)"
gobench -bench . -benchmem ./mkv/
say "(mkv)"

for n in $STREAMS; do
	echo "== kvs bench --streams $n --bitrate 2Mbps --fragment-duration 1s --duration $DURATION (embedded, FS)"
	# Let the writeback of the benchmarks before (gigabytes of dirty pages) finish first: it would
	# otherwise compete with the bench's fdatasyncs.
	sync
	sleep 20
	say "before"
	"$KVS" bench --embedded --data-dir "$WORK" --streams "$n" --bitrate 2Mbps --fragment-duration 1s \
		--duration "$DURATION" 2>"$WORK/bench-$n.log" || echo "kvs bench exited $? (see $WORK/bench-$n.log)"
done
