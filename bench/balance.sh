#!/usr/bin/env bash
# Worker shares: how evenly connections spread over 8 workers at wrk -c64 with
# `Connection: close`, in each corral balance mode (corral-fixture, a Rust worker) and
# under Node's cluster module (examples/node/server.js, its round-robin), plus corral
# shared mode with the same Node app. Prints each worker's share and max/min (1.00 is
# perfectly even). Loopback only; every run is bounded by wrk's -d.
#
#   bench/balance.sh [SECONDS_PER_RUN] [WORKERS]        (needs wrk, node, cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
N=${2:-8}
need wrk node cargo python3
cargo build --release --workspace -q
CORRAL=target/release/corral
FIXTURE=target/release/corral-fixture
SERVER=examples/node/server.js
scratch

shares() { # label port
  wrk -t2 -c64 -d"${D}s" -H "Connection: close" -s bench/shares.lua "http://127.0.0.1:$2/" > "$OUT/$1.wrk"
  printf '%-28s %8s req/s  %s\n' "$1" "$(rps "$OUT/$1.wrk")" "$(grep -o 'workers=.*' "$OUT/$1.wrk")"
}

corral_shares() { # label balance command...
  local label=$1 balance=$2 P S; shift 2
  P=$(free_port)
  $CORRAL run --listen "127.0.0.1:$P" -i "$N" --balance "$balance" -- "$@" >/dev/null 2>&1 & S=$!; PIDS+=($S)
  wait_http "$P"; sleep 1
  shares "$label" "$P"
  stop "$S"
}

echo "== worker shares, $N workers, wrk -t2 -c64 -d${D}s, Connection: close (2 cores shared with wrk) =="
corral_shares "corral shared (fixture)" shared "$FIXTURE"
corral_shares "corral round-robin (fixture)" round-robin "$FIXTURE"
corral_shares "corral least-loaded (fixture)" least-loaded "$FIXTURE"
corral_shares "corral reuseport (fixture)" reuseport "$FIXTURE"
corral_shares "corral shared (node)" shared node "$SERVER"
corral_shares "corral reuseport (node)" reuseport node "$SERVER"
corral_shares "corral round-robin (node)" round-robin node "$SERVER"
P=$(free_port); PORT=$P WORKERS=$N node bench/node/cluster.js >/dev/null & S=$!; PIDS+=($S); wait_http "$P"; sleep 1
shares "node cluster (node)" "$P"; stop "$S"
