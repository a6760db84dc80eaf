#!/usr/bin/env bash
# A local kvs cluster to try: PostgreSQL, an S3 server (versitygw) and three `kvs server` nodes on
# this machine, all on loopback, data under ./kvs-cluster. Not for production (docs/cluster.md says
# what a production deployment needs).
#
#   bash scripts/cluster.sh          # start; prints the endpoints
#   bash scripts/cluster.sh stop     # stop everything (data is kept; start again to resume)
#
# Needs: Go, PostgreSQL's server programs (apt-get install postgresql), versitygw
# (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0), curl.
# Ports: PostgreSQL 15432, S3 17000, nodes 4567 4568 4569 (override with KVS_CLUSTER_PORT_BASE); all
# below Linux's ephemeral range (32768-60999), so that no outgoing connection of a busy machine holds one.
# KVS_CLUSTER_ARGS adds flags to every node (e.g. "--flush-interval 100ms"); KVS_CLUSTER_DIR moves
# the data (default ./kvs-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${KVS_CLUSTER_DIR:-$PWD/kvs-cluster}
base=${KVS_CLUSTER_PORT_BASE:-4567}
pgport=15432
s3port=17000
access=kvslocal
secret=kvslocal-secret
bucket=kvs
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
export PATH=$PATH:${pgbin:-}:$(go env GOPATH)/bin

as_pg() { # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
  for pidfile in "$root"/node*.pid "$root"/s3.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  [ -d "$root/pg" ] && as_pg pg_ctl -D "$root/pg" -m fast -w stop >/dev/null 2>&1 || true
  echo "stopped (data kept in $root)"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

command -v initdb >/dev/null || { echo "PostgreSQL's initdb not found: apt-get install postgresql" >&2; exit 1; }
command -v versitygw >/dev/null || { echo "versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0" >&2; exit 1; }
mkdir -p "$root/s3" "$root/logs"
[ "$(id -u)" = 0 ] && chown postgres "$root" "$root/logs" && chmod 755 "$root" || true

# A port already taken (the single `kvs server` of README's tour listens on 4567) would otherwise
# leave that node dead while the readiness wait below is answered by the other program.
for i in 0 1 2; do
  port=$((base + i))
  if [ -f "$root/node$((i + 1)).pid" ] && kill -0 "$(cat "$root/node$((i + 1)).pid")" 2>/dev/null; then
    echo "node $((i + 1)) of this cluster is running already: bash scripts/cluster.sh stop first" >&2; exit 1
  fi
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    echo "port $port is in use (by a kvs server started by hand?): stop that, or set KVS_CLUSTER_PORT_BASE to a base with 3 free ports" >&2; exit 1
  fi
done

echo "building kvs"
go build -o "$root/kvs" ./cmd/kvs

if [ ! -d "$root/pg" ]; then
  as_pg initdb -D "$root/pg" -A trust -U postgres >/dev/null
fi
as_pg pg_ctl -D "$root/pg" -l "$root/logs/postgres.log" -w \
  -o "-p $pgport -k $root -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
index="postgres://postgres@127.0.0.1:$pgport/postgres"

versitygw --port 127.0.0.1:$s3port --access $access --secret $secret posix "$root/s3" >"$root/logs/s3.log" 2>&1 &
echo $! >"$root/s3.pid"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$s3port" && break; sleep 0.1; done
curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" -X PUT \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  "http://127.0.0.1:$s3port/$bucket" || true
objects="s3://$bucket?endpoint=http://127.0.0.1:$s3port&region=us-east-1&path_style=true"

for i in 0 1 2; do
  port=$((base + i))
  AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret \
    "$root/kvs" server --listen 127.0.0.1:$port --advertise-url http://127.0.0.1:$port \
    --index "$index" --objects "$objects" ${KVS_CLUSTER_ARGS:-} >"$root/logs/node$((i + 1)).log" 2>&1 &
  echo $! >"$root/node$((i + 1)).pid"
done
for i in 0 1 2; do
  for _ in $(seq 100); do curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$((base + i))/readyz" && break; sleep 0.1; done
  if ! kill -0 "$(cat "$root/node$((i + 1)).pid")" 2>/dev/null || ! curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$((base + i))/readyz"; then
    echo "node $((i + 1)) (port $((base + i))) did not start; its log, $root/logs/node$((i + 1)).log, ends:" >&2
    tail -5 "$root/logs/node$((i + 1)).log" >&2
    stop >&2
    exit 1
  fi
done

cat <<MSG
kvs cluster running (logs in $root/logs):
  nodes:       http://127.0.0.1:$base http://127.0.0.1:$((base + 1)) http://127.0.0.1:$((base + 2))
  PostgreSQL:  $index
  S3:          $objects (access key $access)
Try:
  $root/kvs --endpoint http://127.0.0.1:$base create-stream --stream-name cam --data-retention-in-hours 1
  $root/kvs --endpoint http://127.0.0.1:$((base + 1)) put-media --stream-name cam --source testsrc --duration 30s &
  $root/kvs --endpoint http://127.0.0.1:$((base + 2)) get-media --stream-name cam --start-selector NOW | ffplay -
  curl -s -X POST http://127.0.0.1:$base/kvs/describeCluster     # nodes and the streams each writes
Stop: bash scripts/cluster.sh stop
MSG
