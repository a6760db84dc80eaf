#!/usr/bin/env bash
# test-timeline.sh runs the README's test command as `go test -json` and shows when each package's
# tests ran next to how busy the machine was each second (/proc/stat), and the idle core-seconds
# while the command ran: where the suite waits rather than works. Run from the repository root:
#
#   scripts/test-timeline.sh              # KVS_REQUIRE_TOOLS=1 go test -count=1 -json ./...
#
# Package times count from the first test event; go test compiles and links before that. Nothing
# is asserted; the machine's other load counts as busy.
set -euo pipefail
exec python3 - <<'EOF'
import datetime, json, os, subprocess, tempfile, time

hz = os.sysconf('SC_CLK_TCK')
cores = os.cpu_count()

def busy():
    v = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / hz  # all but idle and iowait

out = tempfile.NamedTemporaryFile(prefix='test-timeline-', suffix='.json', delete=False)
env = dict(os.environ, KVS_REQUIRE_TOOLS='1')
proc = subprocess.Popen(['go', 'test', '-count=1', '-json', './...'], stdout=out, stderr=subprocess.STDOUT, env=env)
t0 = time.time()
b0 = prev = busy()
pt = t0
per_second = []
while proc.poll() is None:
    time.sleep(1)
    b, t = busy(), time.time()
    per_second.append((b - prev) / (t - pt))
    prev, pt = b, t
wall = time.time() - t0
used = busy() - b0
print('exit %d, wall %.1f s, busy %.1f core-seconds, idle %.1f core-seconds of %d cores'
      % (proc.returncode, wall, used, cores * wall - used, cores))
print('busy cores each second:', ' '.join('%.1f' % u for u in per_second))

events = []
for line in open(out.name):
    if line.startswith('{'):
        events.append(json.loads(line))
def at(e):
    return datetime.datetime.fromisoformat(e['Time'].replace('Z', '+00:00')).timestamp()
if events:
    first = min(at(e) for e in events)
    span = {}
    for e in events:
        p = e['Package']
        x = at(e) - first
        s = span.setdefault(p, [x, x])
        s[0], s[1] = min(s[0], x), max(s[1], x)
    print('%-50s %7s %7s %7s' % ('package', 'from', 'to', 's'))
    for p, (a, b) in sorted(span.items(), key=lambda kv: kv[1][0]):
        if b - a >= 0.3:
            print('%-50s %7.1f %7.1f %7.1f' % (p, a, b, b - a))
if proc.returncode == 0:
    os.unlink(out.name)
else:
    print('the go test -json output is kept in', out.name)
EOF
