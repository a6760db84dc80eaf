#!/bin/sh
# soak.sh: run the SIGKILL crash test (cmd/crash_test.go, TestCrashSafety) for longer than CI does.
#
#   scripts/soak.sh [CYCLES [SEED]]
#
# CYCLES (default 200) kill/restart cycles of a real `kvs server` under a fast PutMedia stream,
# every third one with a torn segment tail; SEED (default: the current time) picks the kill
# moments, so a failing run can be repeated exactly with the seed it prints. Each restart checks
# that every fragment ever acknowledged PERSISTED is listed and reads back byte for byte.
set -eu
cycles=${1:-200}
seed=${2:-$(date +%s)}
cd "$(dirname "$0")/.."
echo "soak: $cycles cycles, seed $seed (repeat with: $0 $cycles $seed)" >&2
# About 1 s per cycle on an idle machine; allow 10.
timeout=$((cycles * 10 + 120))
KVS_CRASH_CYCLES=$cycles KVS_CRASH_SEED=$seed exec go test -count=1 -run '^TestCrashSafety$' -timeout "${timeout}s" -v ./cmd
