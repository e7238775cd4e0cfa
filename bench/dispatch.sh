#!/usr/bin/env bash
# Side by side on the same Rust worker (corral-fixture), 2 workers, `Connection: close`:
# corral --balance shared, reuseport and round-robin vs a single process, with Node's
# cluster module (round-robin, examples/node/server.js) as the reference point. Then
# what each hand-off costs its supervisor, in CPU per connection, in the same run: the
# floor (bench/floor.c: accept4 + sendmsg(SCM_RIGHTS) + close, nothing else, feeding the
# same fixture workers), corral round-robin, and Node's cluster primary. Then latency
# at one connection at a time (wrk -c1) per mode. Loopback only; every run is bounded
# by wrk's -d.
#
#   bench/dispatch.sh [SECONDS_PER_RUN]        (needs wrk, node, cargo, gcc)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
D=${1:-10}
need wrk node cargo python3 gcc
cargo build --release --workspace -q
CORRAL=target/release/corral
FIXTURE=target/release/corral-fixture
scratch
gcc -O2 -o "$OUT/floor" bench/floor.c

# CPU time a process ran, in ns, from the scheduler (/proc/PID/schedstat): exact, where
# /proc/PID/stat's utime+stime count 10 ms ticks.
cpu_ns() { awk '{ print $1 }' "/proc/$1/schedstat"; }

measure() { # label pid port: close load, the supervisor's CPU ticks over it
  local T0 T1
  # After the one-off look at each worker's sockets (1 s after ready), which reads
  # /proc/net/tcp: not a cost per connection.
  sleep 1.5
  T0=$(cpu_ns "$2")
  wrk -t2 -c64 -d"${D}s" -H "Connection: close" "http://127.0.0.1:$3/" > "$OUT/$1.wrk"
  T1=$(cpu_ns "$2")
  echo $((T1 - T0)) > "$OUT/$1.ns"
  echo "$1: $(rps "$OUT/$1.wrk") req/s, $(errors "$OUT/$1.wrk") errors"
}

latency() { # label port: one connection at a time, median and 99th percentile
  wrk -t1 -c1 -d"${D}s" --latency -H "Connection: close" "http://127.0.0.1:$2/" > "$OUT/$1.c1"
  echo "$1 at -c1: $(rps "$OUT/$1.c1") req/s, median $(pct 50 "$OUT/$1.c1"), p99 $(pct 99 "$OUT/$1.c1")"
}
pct() { awk -v p="$1%" '$1 == p { print $2 }' "$2"; }
us() { # wrk's latency (123.45us, 1.20ms) in microseconds
  awk '{ v = $1 + 0; if ($1 ~ /ms$/) v *= 1000; else if ($1 ~ /[0-9]s$/) v *= 1000000; print v }' <<< "$1"
}

corral_run() { # label instances balance
  local P S
  P=$(free_port)
  $CORRAL run --listen "127.0.0.1:$P" -i "$2" --balance "$3" --ready notify -- $FIXTURE >/dev/null 2>&1 & S=$!; PIDS+=($S)
  wait_http "$P"
  measure "$1" "$S" "$P"
  [ "$2" = 2 ] && latency "$1" "$P"
  stop "$S"
}

echo "== corral-fixture, Connection: close, wrk -t2 -c64 -d${D}s, 2 cores shared with wrk =="
corral_run single 1 shared
corral_run shared 2 shared
corral_run reuseport 2 reuseport
corral_run round-robin 2 round-robin

P=$(free_port); "$OUT/floor" "$P" 2 "$FIXTURE" >/dev/null 2>&1 & S=$!; PIDS+=($S); wait_http "$P"
measure floor "$S" "$P"; latency floor "$P"; stop "$S"

P=$(free_port); PORT=$P WORKERS=2 node bench/node/cluster.js >/dev/null & S=$!; PIDS+=($S); wait_http "$P"
measure node-cluster "$S" "$P"; stop "$S"
echo "(node-cluster serves Node's hello-world: its req/s is a reference, its primary's CPU per connection is comparable)"

awk -v s="$(rps "$OUT/single.wrk")" -v sh="$(rps "$OUT/shared.wrk")" -v rp="$(rps "$OUT/reuseport.wrk")" -v rr="$(rps "$OUT/round-robin.wrk")" -v n="$(rps "$OUT/node-cluster.wrk")" 'BEGIN {
  printf "ratios: shared/single %.2f  reuseport/shared %.2f  round-robin/shared %.2f  round-robin/node-cluster %.2f\n", sh/s, rp/sh, rr/sh, rr/n }'
per_conn() { # label: supervisor CPU microseconds per connection
  awk -v conns="$(total "$OUT/$1.wrk")" -v ns="$(cat "$OUT/$1.ns")" 'BEGIN { printf "%.2f", (conns > 0 ? ns / conns / 1000 : 0) }'
}
echo "supervisor CPU per handed-off connection: floor $(per_conn floor) us, corral round-robin $(per_conn round-robin) us, node cluster primary $(per_conn node-cluster) us"
awk -v f="$(per_conn floor)" -v c="$(per_conn round-robin)" -v n="$(per_conn node-cluster)" 'BEGIN {
  printf "ratios: corral/floor %.2f  node-primary/floor %.2f  corral/node-primary %.2f\n", (f > 0 ? c/f : 0), (f > 0 ? n/f : 0), (n > 0 ? c/n : 0) }'
echo "supervisor CPU in shared and reuseport modes (no hand-off): $(per_conn shared) us and $(per_conn reuseport) us per connection"
awk -v sh="$(us "$(pct 50 "$OUT/shared.c1")")" -v rp="$(us "$(pct 50 "$OUT/reuseport.c1")")" -v rr="$(us "$(pct 50 "$OUT/round-robin.c1")")" -v f="$(us "$(pct 50 "$OUT/floor.c1")")" 'BEGIN {
  printf "median latency at -c1 vs shared: reuseport %.2f  round-robin %.2f  floor %.2f\n", rp/sh, rr/sh, f/sh }'
