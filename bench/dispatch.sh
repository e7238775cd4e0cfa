#!/usr/bin/env bash
# Side by side on the same Rust worker (corral-fixture), 2 workers, `Connection: close`:
# corral --balance shared vs round-robin vs a single process, with Node's cluster module
# (round-robin, examples/node/server.js) as the reference point. Also: connections the
# supervisor hands off per CPU-second it spends (round-robin run). Loopback only; every
# run is bounded by wrk's -d.
#
#   bench/dispatch.sh [SECONDS_PER_RUN]        (needs wrk, node, cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
need wrk node cargo python3
cargo build --release --workspace -q
CORRAL=target/release/corral
FIXTURE=target/release/corral-fixture
scratch

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

corral_run() { # label instances balance
  local label=$1 n=$2 balance=$3 P S T0 T1
  P=$(free_port)
  $CORRAL run --listen "127.0.0.1:$P" -i "$n" --balance "$balance" --ready notify -- $FIXTURE >/dev/null 2>&1 & S=$!; PIDS+=($S)
  wait_http "$P"; sleep 0.5
  T0=$(cpu_ticks "$S")
  wrk -t2 -c64 -d"${D}s" -H "Connection: close" "http://127.0.0.1:$P/" > "$OUT/$label.wrk"
  T1=$(cpu_ticks "$S")
  echo $((T1 - T0)) > "$OUT/$label.ticks"
  stop "$S"
  echo "$label: $(rps "$OUT/$label.wrk") req/s, $(errors "$OUT/$label.wrk") errors"
}

echo "== corral-fixture, Connection: close, wrk -t2 -c64 -d${D}s, 2 cores shared with wrk =="
corral_run single 1 shared
corral_run shared 2 shared
corral_run round-robin 2 round-robin

P=$(free_port); PORT=$P WORKERS=2 node bench/node/cluster.js >/dev/null & S=$!; PIDS+=($S); wait_http "$P"; sleep 0.5
wrk -t2 -c64 -d"${D}s" -H "Connection: close" "http://127.0.0.1:$P/" > "$OUT/node.wrk"; stop $S
echo "node-cluster (Node hello-world, reference): $(rps "$OUT/node.wrk") req/s, $(errors "$OUT/node.wrk") errors"

HZ=$(getconf CLK_TCK)
awk -v s="$(rps "$OUT/single.wrk")" -v sh="$(rps "$OUT/shared.wrk")" -v rr="$(rps "$OUT/round-robin.wrk")" -v n="$(rps "$OUT/node.wrk")" 'BEGIN {
  printf "ratios: shared/single %.2f  round-robin/single %.2f  round-robin/shared %.2f  round-robin/node-cluster %.2f\n", sh/s, rr/s, rr/sh, rr/n }'
awk -v conns="$(total "$OUT/round-robin.wrk")" -v ticks="$(cat "$OUT/round-robin.ticks")" -v hz="$HZ" 'BEGIN {
  cpu = ticks / hz; printf "round-robin supervisor: %d connections handed off using %.2f CPU-s = %.0f connections per CPU-second\n", conns, cpu, (cpu > 0 ? conns / cpu : 0) }'
