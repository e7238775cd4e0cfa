#!/usr/bin/env bash
# The same unmodified Node app (examples/node/plain.js: http.createServer().listen(PORT)),
# 2 workers, side by side: corral run, Node's cluster module (round-robin) and PM2
# cluster mode. Throughput with `Connection: close` and keep-alive; failed requests
# across 5 reloads under keep-alive load; RSS per worker. Loopback only; bounded runs.
#
#   bench/node.sh [SECONDS_PER_RUN]   (needs wrk, node; installs pm2 under bench/ if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
for tool in wrk node npm cargo python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x bench/node_modules/.bin/pm2 ] || npm install --prefix bench --no-audit --no-fund --no-save pm2@6 >/dev/null
cargo build --release -p corral -q
CORRAL=target/release/corral
APP=$PWD/examples/node/plain.js
OUT=$(mktemp -d)
export PM2_HOME=$OUT/pm2
PM2="bench/node_modules/.bin/pm2"
PIDS=()
cleanup() {
  $PM2 kill >/dev/null 2>&1 || true
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
children() { cat /proc/"$1"/task/*/children 2>/dev/null; }

throughput() { # label port
  wrk -t2 -c64 -d"${D}s" -H "Connection: close" "http://127.0.0.1:$2/" > "$OUT/$1.close"
  wrk -t2 -c64 -d"${D}s" "http://127.0.0.1:$2/" > "$OUT/$1.ka"
  echo "$1: close $(rps "$OUT/$1.close") req/s ($(errors "$OUT/$1.close") errors), keep-alive $(rps "$OUT/$1.ka") req/s ($(errors "$OUT/$1.ka") errors)"
}

reload_under_load() { # label port reload-command...
  local label=$1 port=$2; shift 2
  wrk -t2 -c32 -d"$((D + 15))s" "http://127.0.0.1:$port/" > "$OUT/$label.reload" & local W=$!
  sleep 1
  for _ in 1 2 3 4 5; do "$@" >/dev/null 2>&1; sleep 2; done
  wait $W
  echo "$label: $(errors "$OUT/$label.reload") failed of $(total "$OUT/$label.reload") requests across 5 reloads (keep-alive, wrk -c32)"
}

echo "== same app, 2 workers (corral shared, round-robin and reuseport, the default for Node), wrk -t2 -c64 -d${D}s, all on the same 2 cores =="

P=$(free_port)
$CORRAL run --listen "127.0.0.1:$P" -i 2 --balance shared -- node "$APP" >/dev/null 2>"$OUT/corral.err" &
S=$!; PIDS+=($S); wait_http "$P"
throughput corral "$P"
W=$(children "$S"); echo "corral: supervisor $(rss_kib "$S") KiB; workers $(for w in $W; do echo -n "$(rss_kib "$w") "; done)KiB"
reload_under_load corral "$P" kill -HUP "$S"
echo "corral reloads done: $(grep -c 'reload done' "$OUT/corral.err"), aborted: $(grep -c 'reload aborted' "$OUT/corral.err")"
stop "$S"

P=$(free_port)
$CORRAL run --listen "127.0.0.1:$P" -i 2 --balance round-robin -- node "$APP" >/dev/null 2>"$OUT/corral-rr.err" &
S=$!; PIDS+=($S); wait_http "$P"
throughput corral-round-robin "$P"
reload_under_load corral-round-robin "$P" kill -HUP "$S"
stop "$S"

P=$(free_port)
$CORRAL run --listen "127.0.0.1:$P" -i 2 --balance reuseport -- node "$APP" >/dev/null 2>"$OUT/corral-rp.err" &
S=$!; PIDS+=($S); wait_http "$P"
throughput corral-reuseport "$P"
reload_under_load corral-reuseport "$P" kill -HUP "$S"
stop "$S"

P=$(free_port)
PORT=$P WORKERS=2 APP=$APP node bench/node/cluster.js >/dev/null & S=$!; PIDS+=($S); wait_http "$P"
throughput node-cluster "$P"
W=$(children "$S"); echo "node-cluster: primary $(rss_kib "$S") KiB; workers $(for w in $W; do echo -n "$(rss_kib "$w") "; done)KiB; (no built-in reload)"
stop "$S"

P=$(free_port)
PORT=$P $PM2 start "$APP" -i 2 --name plain >/dev/null; wait_http "$P"; sleep 1
throughput pm2 "$P"
DAEMON=$(cat "$PM2_HOME/pm2.pid")
W=$($PM2 jlist | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).map(p=>p.pid).join(" ")))')
echo "pm2: daemon $(rss_kib "$DAEMON") KiB; workers $(for w in $W; do echo -n "$(rss_kib "$w") "; done)KiB"
reload_under_load pm2 "$P" $PM2 reload plain
$PM2 kill >/dev/null

awk -v c="$(rps "$OUT/corral.close")" -v r="$(rps "$OUT/corral-round-robin.close")" -v n="$(rps "$OUT/node-cluster.close")" -v p="$(rps "$OUT/pm2.close")" \
    -v ck="$(rps "$OUT/corral.ka")" -v nk="$(rps "$OUT/node-cluster.ka")" -v pk="$(rps "$OUT/pm2.ka")" \
    -v u="$(rps "$OUT/corral-reuseport.close")" -v uk="$(rps "$OUT/corral-reuseport.ka")" -v rk="$(rps "$OUT/corral-round-robin.ka")" 'BEGIN {
  printf "ratios close: corral/node-cluster %.2f corral/pm2 %.2f corral-rr/node-cluster %.2f corral-reuseport/node-cluster %.2f corral-reuseport/corral-shared %.2f\n", c/n, c/p, r/n, u/n, u/c
  printf "ratios keep-alive: corral/node-cluster %.2f corral/pm2 %.2f corral-rr/node-cluster %.2f corral-reuseport/node-cluster %.2f corral-reuseport/corral-shared %.2f\n", ck/nk, ck/pk, rk/nk, uk/nk, uk/ck }'
