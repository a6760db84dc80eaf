#!/usr/bin/env bash
# perf-cluster.sh: the cluster figures of the README, side by side with a single node in one run.
# For each stream count, `kvs bench` (N streams × 2 Mbit/s × 1 s fragments) against
#   - one node: `kvs bench --embedded` (FS store, fdatasync),
#   - a 3-node cluster (scripts/cluster.sh: PostgreSQL + versitygw + 3 kvs servers on this
#     machine), producers spread over the nodes and each consumer on another node than its
#     stream's writer,
# and prints PERSISTED ack and delivery latencies, errors, S3 PUTs per node per second and per
# stream-hour, PostgreSQL commits per second, and the CPU of the nodes, PostgreSQL and versitygw.
#
#   scripts/perf-cluster.sh
#   KVS_PERF_STREAMS="100 200" KVS_PERF_DURATION=30s KVS_PERF_FLUSH="250ms 100ms" scripts/perf-cluster.sh
#
# Needs what scripts/cluster.sh needs, and psql. Nothing here asserts a figure: it prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${KVS_PERF_STREAMS:-"100 200"}
DURATION=${KVS_PERF_DURATION:-30s}
FLUSH=${KVS_PERF_FLUSH:-"250ms"}
export KVS_CLUSTER_DIR=${KVS_CLUSTER_DIR:-/tmp/kvs-perf-cluster}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
KVS=$KVS_CLUSTER_DIR/kvs
nodes=http://127.0.0.1:4567,http://127.0.0.1:4568,http://127.0.0.1:4569
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
sql() { "$psql" -qtA postgres://postgres@127.0.0.1:15432/postgres -c "$1"; }
. "$(dirname "$0")/lib.sh"
summary() { # bench JSON on stdin → "persisted p50/p99 | delivery p50/p99 | errors"
  python3 -c 'import json,sys; r=json.load(sys.stdin); p=r["persisted_ack_ms"]; d=r["delivery_ms"]; print("errors %d, %.0f Mbit/s in; PERSISTED p50/p99 %.1f / %.1f ms; delivery p50/p99 %.1f / %.1f ms" % (r["errors"], r["ingest_mbps"], p["p50"], p["p99"], d["p50"], d["p99"]))'
}
secs=$(python3 -c "import re,sys; s='$DURATION'; print(float(s[:-1]) if s.endswith('s') else float(s[:-1])*60)")

mkdir -p "$KVS_CLUSTER_DIR"
go build -o "$KVS" ./cmd/kvs
echo "machine: $(nproc) cores, $(uname -r); go: $(go version | cut -d' ' -f3); $(date -u +%FT%TZ)"
for n in $STREAMS; do
  echo "== $n streams × 2 Mbit/s × 1 s fragments, $DURATION"
  sync; sleep 2 # the writeback of earlier runs would compete with this one's fsyncs
  echo "-- one node (embedded, FS store), load $(la)"
  "$KVS" bench --embedded --streams "$n" --bitrate 2Mbps --fragment-duration 1s --duration "$DURATION" --output json 2>/dev/null | summary
  for flush in $FLUSH; do
    bash scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$KVS_CLUSTER_DIR/pg" "$KVS_CLUSTER_DIR/s3"
    sync; sleep 2
    KVS_CLUSTER_ARGS="--flush-interval $flush" bash scripts/cluster.sh >/dev/null
    node_pids=$(cat "$KVS_CLUSTER_DIR"/node*.pid)
    s3_pid=$(cat "$KVS_CLUSTER_DIR/s3.pid")
    pg_main=$(head -1 "$KVS_CLUSTER_DIR/pg/postmaster.pid")
    objects0=$(sql "SELECT count(*) FROM kvs_objects")
    xact0=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
    cn0=$(ticks $node_pids); cs0=$(ticks $s3_pid); cp0=$(ticks $pg_main $(pgrep -P "$pg_main"))
    echo "-- 3-node cluster, --flush-interval $flush, load $(la)"
    json=$("$KVS" --endpoint "$nodes" bench --streams "$n" --bitrate 2Mbps --fragment-duration 1s --duration "$DURATION" --output json 2>/dev/null)
    cn1=$(ticks $node_pids); cs1=$(ticks $s3_pid); cp1=$(ticks $pg_main $(pgrep -P "$pg_main"))
    objects1=$(sql "SELECT count(*) FROM kvs_objects")
    xact1=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
    echo "$json" | summary
    run=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration_s"])')
    awk -v o=$((objects1 - objects0)) -v x=$((xact1 - xact0)) -v s="$run" -v n="$n" \
      -v cn=$((cn1 - cn0)) -v cs=$((cs1 - cs0)) -v cp=$((cp1 - cp0)) 'BEGIN {
      printf "S3 PUTs: %d in %.0f s = %.2f per node per second, %.1f per stream-hour\n", o, s, o / 3 / s, o / n / (s / 3600)
      printf "PostgreSQL: %.2f index commits/s (one per batch); %.0f transactions/s in all (reads, leases, heartbeats and the bench set-up included)\n", o / s, x / s
      printf "CPU: nodes %.2f cores (%.2f per node), PostgreSQL %.2f, versitygw %.2f\n", cn / 100 / s, cn / 300 / s, cp / 100 / s, cs / 100 / s
    }'
    bash scripts/cluster.sh stop >/dev/null 2>&1
  done
done
