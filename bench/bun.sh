#!/usr/bin/env bash
# The same Bun.serve app, 2 processes, side by side: corral run (its bind shim puts
# both on corral's socket; shared and reuseport) and Bun's own form (two `bun` processes,
# each `reusePort: true`, no supervisor). Throughput with `Connection: close` and
# keep-alive, and failed requests across 5 restarts under keep-alive load (corral: a
# rolling reload; Bun alone: each process killed and started again, as a deploy does).
# Loopback only; bounded runs.
#
#   bench/bun.sh [SECONDS_PER_RUN]   (needs wrk, bun, cargo, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
need wrk bun cargo python3
cargo build --release -p corral -q
CORRAL=target/release/corral
SERVE=$PWD/tests/runtime-apps/bun_serve.js
REUSE=$PWD/tests/runtime-apps/bun_reuse.js
scratch

throughput() { # label port
  wrk -t2 -c64 -d"${D}s" -H "Connection: close" "http://127.0.0.1:$2/" > "$OUT/$1.close"
  wrk -t2 -c64 -d"${D}s" "http://127.0.0.1:$2/" > "$OUT/$1.ka"
  echo "$1: close $(rps "$OUT/$1.close") req/s ($(errors "$OUT/$1.close") errors), keep-alive $(rps "$OUT/$1.ka") req/s ($(errors "$OUT/$1.ka") errors)"
}

under_load() { # label port restart-function
  local label=$1 port=$2 restart=$3
  wrk -t2 -c32 -d"$((D + 15))s" "http://127.0.0.1:$port/" > "$OUT/$label.restarts" & local W=$!
  sleep 1
  for _ in 1 2 3 4 5; do "$restart"; sleep 2; done
  wait $W
  echo "$label: $(errors "$OUT/$label.restarts") failed of $(total "$OUT/$label.restarts") requests across 5 restarts (keep-alive, wrk -c32)"
}

echo "== Bun.serve, 2 processes, wrk -t2 -c64 -d${D}s, all on the same 2 cores =="
for mode in shared reuseport; do
  P=$(free_port)
  $CORRAL run --listen "127.0.0.1:$P" -i 2 --balance "$mode" -- bun "$SERVE" >/dev/null 2>"$OUT/corral-$mode.err" &
  S=$!; PIDS+=($S); wait_http "$P"; sleep 1
  throughput "corral-$mode" "$P"
  reload() { kill -HUP "$S"; }
  under_load "corral-$mode" "$P" reload
  stop "$S"
done

P=$(free_port)
BUNS=()
for _ in 1 2; do PORT=$P bun "$REUSE" >/dev/null 2>&1 & BUNS+=($!); PIDS+=($!); done
wait_http "$P"; sleep 1
throughput bun-reuseport "$P"
restart_one() { # kill the oldest, start a new one: what a deploy without a supervisor does
  kill -TERM "${BUNS[0]}" 2>/dev/null || true; wait "${BUNS[0]}" 2>/dev/null || true
  BUNS=("${BUNS[@]:1}")
  PORT=$P bun "$REUSE" >/dev/null 2>&1 & BUNS+=($!); PIDS+=($!)
}
under_load bun-reuseport "$P" restart_one
for b in "${BUNS[@]}"; do stop "$b"; done

awk -v s="$(rps "$OUT/corral-shared.close")" -v r="$(rps "$OUT/corral-reuseport.close")" -v b="$(rps "$OUT/bun-reuseport.close")" \
    -v sk="$(rps "$OUT/corral-shared.ka")" -v rk="$(rps "$OUT/corral-reuseport.ka")" -v bk="$(rps "$OUT/bun-reuseport.ka")" 'BEGIN {
  printf "ratios close: corral-shared/bun %.2f corral-reuseport/bun %.2f\n", s/b, r/b
  printf "ratios keep-alive: corral-shared/bun %.2f corral-reuseport/bun %.2f\n", sk/bk, rk/bk }'
