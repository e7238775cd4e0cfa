#!/usr/bin/env bash
# Side-by-side: the same Node hello-world as one process, under Node's cluster module
# (2 workers) and under `corral run -i 2`; then failed requests across 5 rolling
# reloads under load; then corral's own memory. Prints ratios. Loopback only; every
# load run is bounded by wrk's -d.
#
#   bench/run.sh [SECONDS_PER_RUN]        (needs wrk, node, cargo; apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
need wrk node cargo
cargo build --release --workspace -q
CORRAL=target/release/corral
FIXTURE=target/release/corral-fixture
SERVER=examples/node/server.js
scratch





load() { # label port extra-wrk-args...
  local label=$1 port=$2; shift 2
  wrk -t2 -c64 -d"${D}s" "$@" "http://127.0.0.1:$port/" > "$OUT/$label.wrk"
  echo "$label: $(rps "$OUT/$label.wrk") req/s, $(errors "$OUT/$label.wrk") errors"
}


echo "== throughput, Connection: close, ${D}s each, wrk -t2 -c64 (same 2-core machine) =="
P=$(free_port); PORT=$P node $SERVER >/dev/null & S=$!; PIDS+=($S); wait_http "$P"
load single "$P" -H "Connection: close"; stop $S

P=$(free_port); PORT=$P node bench/node/cluster.js >/dev/null & S=$!; PIDS+=($S); wait_http "$P"
load cluster "$P" -H "Connection: close"; stop $S

P=$(free_port); $CORRAL run --listen "127.0.0.1:$P" -i 2 -- node $SERVER >/dev/null 2>"$OUT/corral.err" & S=$!; PIDS+=($S); wait_http "$P"
load corral "$P" -H "Connection: close"
RSS=$(awk '/VmRSS/ {print $2}' /proc/$S/status)
WRSS=$(for c in $(cat /proc/$S/task/*/children); do awk '/VmRSS/ {print $2}' /proc/$c/status; done | paste -sd' ')
stop $S

awk -v c="$(rps "$OUT/corral.wrk")" -v n="$(rps "$OUT/cluster.wrk")" -v s="$(rps "$OUT/single.wrk")" 'BEGIN {
  printf "ratio corral/node-cluster: %.2f   corral/single-process: %.2f   node-cluster/single: %.2f\n", c/n, c/s, n/s }'
echo "corral supervisor RSS with 2 workers: ${RSS} KiB (workers: ${WRSS} KiB)"

reloads() { # label worker-command wrk-args...
  local label=$1 cmd=$2; shift 2
  local P; P=$(free_port)
  # shellcheck disable=SC2086
  $CORRAL run --listen "127.0.0.1:$P" -i 2 --ready delay:300ms -- $cmd >/dev/null 2>"$OUT/$label.err" & local S=$!; PIDS+=($S)
  wait_http "$P"
  wrk -t2 -c32 -d"$((D + 10))s" "$@" "http://127.0.0.1:$P/" > "$OUT/$label.wrk" & local W=$!
  sleep 1
  for n in 1 2 3 4 5; do
    kill -HUP "$S"
    for _ in $(seq 1 200); do
      [ "$(grep -c 'reload done' "$OUT/$label.err")" -ge "$n" ] && break
      sleep 0.05
    done
    sleep 1
  done
  wait $W; stop "$S"
  echo "$label: $(errors "$OUT/$label.wrk") failed of $(grep -o '[0-9]* requests in' "$OUT/$label.wrk" | awk '{print $1}') requests across $(grep -c 'reload done' "$OUT/$label.err") reloads ($(grep -c 'reload aborted' "$OUT/$label.err") aborted)"
}

echo "== 5 rolling reloads under load (wrk -c32) =="
reloads "node-server close" "node $SERVER" -H "Connection: close"
reloads "node-server keep-alive" "node $SERVER"
reloads "fixture close" "$FIXTURE" -H "Connection: close"
reloads "fixture keep-alive" "$FIXTURE"
