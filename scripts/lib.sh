# lib.sh holds the helpers the perf scripts share; they source it:
#
#   . "$(dirname "$0")/lib.sh"
#
# Nothing runs when it is sourced.

la() { cut -d' ' -f1-3 /proc/loadavg; }                         # load average
say() { printf '%s   [load average %s]\n' "$*" "$(la)"; }
now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ticks PID...: the processes' utime + stime, in clock ticks (getconf CLK_TCK a second), summed
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo "$t"; }

# SERVER_PID is the kvs server a script started; stop_server interrupts it and waits for it.
SERVER_PID=""
stop_server() {
	if [ -n "$SERVER_PID" ]; then
		kill -INT "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=""
	fi
}

# perf_input PATH makes the perf scripts' input at PATH unless it is there: 80 s of 1080p30 H.264
# at 20 Mbit/s with a 2 s GOP (about 200 MB).
perf_input() {
	if [ ! -s "$1" ]; then
		echo "== making the input: 80 s of 1080p30 H.264 at 20 Mbit/s, 2 s GOP"
		ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 80 -c:v libx264 -preset ultrafast \
			-b:v 20M -g 60 "$1"
	fi
}
