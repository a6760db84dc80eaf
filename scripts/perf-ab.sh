#!/usr/bin/env bash
# perf-ab.sh compares the working tree's kvs with the kvs of an earlier commit on put-media and
# get-fragments, alternating the two builds round by round so that both see the same machine
# (single runs on a shared VM vary by ±30%). Each build runs its own server (FS store) and client.
# Run from the repository root:
#
#   scripts/perf-ab.sh REV          # e.g. scripts/perf-ab.sh HEAD~3; KVS_PERF_RUNS rounds (default 4)
#
# Per round: put-media of the input into a new stream (each build), get-fragments --parallel 8
# --format raw of the first stream to /dev/null and to a file (each build), and cp of that file.
# KVS_PERF_DIR as for scripts/perf.sh (the input is made there if missing). Nothing is asserted.
set -euo pipefail

REV=${1:?usage: scripts/perf-ab.sh REV}
WORK=${KVS_PERF_DIR:-/tmp/kvs-perf}/ab
RUNS=${KVS_PERF_RUNS:-4}
IN=${KVS_PERF_DIR:-/tmp/kvs-perf}/in-1080p.mkv
mkdir -p "$WORK"
. "$(dirname "$0")/lib.sh"
perf_input "$IN"
go build -o "$WORK/kvs-new" ./cmd/kvs
rm -rf "$WORK/src"
git worktree add -f --detach "$WORK/src" "$REV" >/dev/null 2>&1
(cd "$WORK/src" && go build -o "$WORK/kvs-old" ./cmd/kvs)
git worktree remove --force "$WORK/src"

PIDS=()
stop() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
declare -A URL
for b in old new; do
	rm -rf "$WORK/$b"
	mkdir -p "$WORK/$b"
	"$WORK/kvs-$b" server --listen 127.0.0.1:0 --data-dir "$WORK/$b/data" --log-level warn >"$WORK/$b/url" 2>"$WORK/$b/log" &
	PIDS+=($!)
	for _ in $(seq 100); do [ -s "$WORK/$b/url" ] && break; sleep 0.1; done
	URL[$b]=$(head -1 "$WORK/$b/url")
done
secs() { local t0 t1; sync; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
echo "== $REV ($(git rev-parse --short "$REV")) against the working tree, $RUNS rounds, input $(stat -c %s "$IN") bytes"
for i in $(seq "$RUNS"); do
	line="round $i:"
	for b in old new; do
		line+=" put-media $b $(secs "$WORK/kvs-$b" --endpoint "${URL[$b]}" put-media --stream-name "s$i" --source "$IN" --create --fragment-duration 2s)"
	done
	for b in old new; do
		line+=" | get-fragments /dev/null $b $(secs "$WORK/kvs-$b" --endpoint "${URL[$b]}" get-fragments --stream-name s1 --parallel 8 --format raw -o /dev/null)"
	done
	for b in old new; do
		rm -f "$WORK/out"
		line+=" | to a file $b $(secs "$WORK/kvs-$b" --endpoint "${URL[$b]}" get-fragments --stream-name s1 --parallel 8 --format raw -o "$WORK/out")"
	done
	rm -f "$WORK/out2"
	line+=" | cp $(secs cp "$WORK/out" "$WORK/out2")   [load average $(cut -d' ' -f1-3 /proc/loadavg)]"
	echo "$line"
done
echo "stored: old $(du -sb "$WORK/old/data" | cut -f1) bytes, new $(du -sb "$WORK/new/data" | cut -f1) bytes"
rm -f "$WORK/out" "$WORK/out2"
