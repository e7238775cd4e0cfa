#!/usr/bin/env bash
# Crash -> served: one worker, SIGKILLed; how long until a request is answered again by
# its replacement. The first crash after a stable run restarts at once; the second in
# the window waits out --restart-delay (100 ms). Node's cluster module (a primary that
# forks on 'exit') on the same kind of app, in the same run, for comparison.
#
#   bench/crash.sh [TRIALS]        (needs node, python3, cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
N=${1:-10}
cargo build --release --workspace -q
CORRAL=target/release/corral
FIXTURE=target/release/corral-fixture
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Kills the process answering on PORT ($2 crashes, one after another) and prints the
# milliseconds from each kill to the first answer from another pid.
measure() { # port crashes
  python3 - "$1" "$2" <<'PY'
import re, os, signal, socket, sys, time
port, crashes = int(sys.argv[1]), int(sys.argv[2])
def who():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        m = re.search(rb"pid[=: ](\d+)", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None
out = []
for _ in range(crashes):
    deadline = time.time() + 10
    old = None
    while old is None and time.time() < deadline:
        old = who()
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    while time.time() < deadline:
        pid = who()
        if pid is not None and pid != old:
            break
    out.append((time.monotonic() - t0) * 1000)
print(" ".join(f"{ms:.1f}" for ms in out))
PY
}

cat >"$OUT/cluster.js" <<'JS'
const cluster = require('cluster');
const http = require('http');
if (cluster.isPrimary) {
  cluster.fork();
  cluster.on('exit', () => cluster.fork());
} else {
  http.createServer((req, res) => res.end(`pid=${process.pid}\n`)).listen(process.env.PORT);
}
JS
node_cluster() { PORT=$1 node "$OUT/cluster.js"; }

median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

first=() second=() node=()
for _ in $(seq 1 "$N"); do
  port=$(free_port)
  "$CORRAL" run --listen "127.0.0.1:$port" -i 1 --min-uptime 0s -- "$FIXTURE" >"$OUT/corral.log" 2>&1 &
  pid=$!
  wait_http "$port"
  read -r a b <<<"$(measure "$port" 2)"
  first+=("$a") second+=("$b")
  stop "$pid"
  port=$(free_port)
  node_cluster "$port" >/dev/null 2>&1 &
  pid=$!
  wait_http "$port"
  node+=("$(measure "$port" 1)")
  stop "$pid"
done
f=$(echo "${first[*]}" | median) s=$(echo "${second[*]}" | median) n=$(echo "${node[*]}" | median)
echo "crash -> served, median of $N (ms): corral first crash $f, corral second crash $s, node cluster $n"
awk -v f="$f" -v s="$s" -v n="$n" 'BEGIN { printf "ratios: corral first/second %.2f, corral first/node cluster %.2f\n", f/s, f/n }'
