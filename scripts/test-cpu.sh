#!/usr/bin/env bash
# test-cpu.sh runs a command (default: the README's test command) and says where the machine's CPU
# went while it ran: the wall time, the busy core-seconds of the whole machine (/proc/stat), and
# the CPU of each kind of process the command started (/proc/PID/stat, sampled every 0.1 s, so a
# process that lives less than that is missed: the per-process sum is below the machine's).
# Chromium's processes are told apart by their --type. Run from the repository root:
#
#   scripts/test-cpu.sh                                   # KVS_REQUIRE_TOOLS=1 go test -count=1 ./...
#   scripts/test-cpu.sh go test -count=1 -run 'TestConsoleBrowser|TestClusterConsole' ./server
#
# Nothing is asserted; the machine's other load counts in the busy core-seconds. When the command
# fails, its output is kept in a file whose name is printed, with its failures.
set -euo pipefail
if [ $# -eq 0 ]; then
	set -- env KVS_REQUIRE_TOOLS=1 go test -count=1 ./...
fi
exec python3 - "$@" <<'EOF'
import collections, os, re, subprocess, sys, time

hz = os.sysconf('SC_CLK_TCK')

def busy():
    f = open('/proc/stat').readline().split()[1:]
    v = [int(x) for x in f]
    return (sum(v) - v[3] - v[4]) / hz, (v[2] + v[5] + v[6]) / hz  # all but idle and iowait; system, irq, softirq

def scan(seen):
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            st = open('/proc/%s/stat' % pid).read()
            name = st[st.index('(') + 1:st.rindex(')')]
            f = st[st.rindex(')') + 2:].split()
            cpu, kern, start = (int(f[11]) + int(f[12])) / hz, int(f[12]) / hz, int(f[19])
            args = open('/proc/%s/cmdline' % pid).read().replace('\0', ' ')
        except (OSError, ValueError):
            continue
        if 'chrom' in name:
            t = re.search(r'--type=(\S+)', args)
            name = 'chromium ' + (t.group(1) if t else 'browser')
        elif name in ('kvs', 'python3') and len(args.split()) > 1:
            name += ' ' + args.split()[1]
        key = (pid, start)
        if not args and key in seen:  # exited (a zombie has no cmdline): keep what it was
            name = seen[key][0]
        seen[key] = (name, cpu, kern)

before = {}
scan(before)
t0, (b0, k0) = time.time(), busy()
# The command's output goes to a file, kept and shown (its failures) when the command fails.
import tempfile
out = tempfile.NamedTemporaryFile(prefix='test-cpu-', suffix='.log', delete=False)
proc = subprocess.Popen(sys.argv[1:], stdout=out, stderr=subprocess.STDOUT)
seen = {}
while proc.poll() is None:
    scan(seen)
    time.sleep(0.1)
b1, k1 = busy()
wall, cores, ksys = time.time() - t0, b1 - b0, k1 - k0
by, n, ks = collections.Counter(), collections.Counter(), collections.Counter()
for key, (name, cpu, kern) in seen.items():
    if key not in before:
        by[name] += cpu
        ks[name] += kern
        n[name] += 1
print('exit %d, wall %.1f s, machine busy %.1f core-seconds (%.1f in the kernel)' % (proc.returncode, wall, cores, ksys))
print('     CPU  (kernel)  processes  kind')
for name, cpu in by.most_common(25):
    print('%7.2f s %7.2f s  %4d  %s' % (cpu, ks[name], n[name], name))
print('%7.2f s %7.2f s  in the processes seen' % (sum(by.values()), sum(ks.values())))
out.close()
if proc.returncode != 0:
    lines = open(out.name, errors='replace').read().splitlines()
    fails = [i for i, l in enumerate(lines) if l.startswith('--- FAIL') or l.startswith('panic:') or 'build failed' in l]
    print('the command failed; its output is in %s. Its failures:' % out.name)
    for i in fails[:10]:
        print('\n'.join(lines[i:i + 12]))
else:
    os.unlink(out.name)
sys.exit(proc.returncode)
EOF
