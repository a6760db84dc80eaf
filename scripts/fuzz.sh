#!/usr/bin/env bash
# fuzz.sh runs kvs's fuzz targets with `go test -fuzz`, one after another, and with --save copies
# the inputs each run found new coverage with (kept in Go's cache) into the package's
# testdata/fuzz/<Target>, so that the corpus lands with the code and every `go test` replays it.
# Run from the repository root:
#
#   scripts/fuzz.sh [--save] [PATTERN]   # PATTERN: a regexp of target names (default: all)
#
# KVS_FUZZ_TIME is each target's time (default 30s). --save keeps, of the inputs a run found, the
# KVS_FUZZ_KEEP smallest (default 20) of at most KVS_FUZZ_MAX bytes (default 32768): the
# repository carries them and every `go test` replays them, and a run finds hundreds, most of
# them small steps of one another.
#
# Each run passes -fuzzminimizetime 20x: Go minimizes a new interesting input for up to 60 s by
# default, and while it does the run executes nothing else; for the targets that drive a whole
# handler on inputs of 100 KB (FuzzPutMediaBody) a 30 s run then spent nearly all its time
# minimizing after the first find (70 execs in 30 s instead of about 50,000).
set -euo pipefail

SAVE=0
if [ "${1:-}" = --save ]; then
	SAVE=1
	shift
fi
PATTERN=${1:-.}
TIME=${KVS_FUZZ_TIME:-30s}
MAX=${KVS_FUZZ_MAX:-32768}
KEEP=${KVS_FUZZ_KEEP:-20}
CACHE=$(go env GOCACHE)/fuzz

FAILED=()
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' | grep -E -- "$PATTERN" || true); do
		echo "== $pkg $target ($TIME)"
		before=$(mktemp)
		ls "$CACHE/$pkg/$target" 2>/dev/null | sort >"$before" || true
		out=$(mktemp)
		if go test -run '^$' -fuzz "^$target\$" -fuzztime "$TIME" -fuzzminimizetime 20x "$pkg" >"$out" 2>&1; then
			tail -3 "$out"
		else # the failing input is in testdata/fuzz/$target; go on with the other targets
			tail -40 "$out"
			FAILED+=("$pkg $target")
		fi
		rm -f "$out"
		if [ "$SAVE" = 1 ] && [ -d "$CACHE/$pkg/$target" ]; then
			mkdir -p "$dir/testdata/fuzz/$target"
			n=0
			for f in $(cd "$CACHE/$pkg/$target" && ls | sort | comm -13 "$before" - | xargs -r stat -c '%s %n' |
				awk -v max="$MAX" '$1 <= max' | sort -n | head -n "$KEEP" | cut -d' ' -f2); do
				cp "$CACHE/$pkg/$target/$f" "$dir/testdata/fuzz/$target/$f"
				n=$((n + 1))
			done
			echo "   $n new inputs saved to ${dir#"$PWD"/}/testdata/fuzz/$target"
		fi
		rm -f "$before"
	done
done
if [ "${#FAILED[@]}" -gt 0 ]; then
	printf 'failed: %s\n' "${FAILED[@]}"
	exit 1
fi
