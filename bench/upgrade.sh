#!/usr/bin/env bash
# Upgrades and daemon deaths under load: failed/total requests (wrk, keep-alive and
# `Connection: close`) across
#   - `corral update` (3 times, the binary replaced on disk in between) vs `pm2 update`,
#   - SIGKILL of the corral daemon (shared, round-robin, Node reuseport) vs of PM2's,
#     and how long no daemon ran (kill -> the next one answers and has the workers),
#   - `corral run` upgraded in place by SIGURG (3 times).
# Same Node app (examples/node/plain.js, 2 workers) for corral and PM2; corral-fixture
# for the corral-only rows.
#
#   bench/upgrade.sh [SECONDS_PER_RUN]   (needs wrk, node; installs pm2 under bench/)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
need wrk node python3
S=${1:-6}
cargo build --release --workspace -q
[ -d examples/node/node_modules ] || npm ci --prefix examples/node --no-audit --no-fund >/dev/null
[ -x bench/node_modules/.bin/pm2 ] || npm install --prefix bench --no-audit --no-fund --no-save pm2@6 >/dev/null
scratch
mkdir -p "$OUT/bin"
cp target/release/corral "$OUT/bin/corral"
CORRAL="$OUT/bin/corral"
FIXTURE=$(pwd)/target/release/corral-fixture
PLAIN=$(pwd)/examples/node/plain.js
export CORRAL_HOME=$OUT/home PM2_HOME=$OUT/pm2
PM2=bench/node_modules/.bin/pm2

replace_binary() { cp target/release/corral "$OUT/bin/corral.new" && mv "$OUT/bin/corral.new" "$CORRAL"; }

# wrk for S seconds on PORT (keep-alive, or close with "close"), while EVENT runs after a
# second; prints "errors/answered max-latency": wrk's socket errors (each failed connect
# counts) and non-2xx answers, over the answers it got, and the slowest answer.
under_load() { # name port ka|close event...
  local name=$1 port=$2 kind=$3; shift 3
  local header=()
  [ "$kind" = close ] && header=(-H 'Connection: close')
  wrk -t2 -c16 -d"${S}s" "${header[@]}" "http://127.0.0.1:$port/" >"$OUT/$name.$kind" 2>&1 &
  local load=$!
  sleep 1
  "$@" >"$OUT/$name.$kind.event" 2>&1 || true
  wait "$load"
  echo "$(errors "$OUT/$name.$kind")/$(total "$OUT/$name.$kind") $(awk '/Latency/ {print $4}' "$OUT/$name.$kind")"
}

corral_updates() { for _ in 1 2 3; do replace_binary; "$CORRAL" update; sleep 0.5; done; }

# SIGKILLs the daemon; prints the ms until the daemon its holder starts answers with the
# workers back (`ls` starts no daemon; `ping` would, which is the CLI's path).
kill_daemon() {
  local old
  old=$("$CORRAL" ping | awk '{print $NF}')
  local t0
  t0=$(date +%s%N)
  kill -9 "$old"
  until "$CORRAL" ls --json 2>/dev/null | grep -q online; do
    sleep 0.01
  done
  echo "no daemon for $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

row() { printf '%-52s %22s %22s  %s\n' "$@"; }
row "errors/answered" "keep-alive" "close" "note"

# corral update, Node app (reuseport, the port asked for by listen(PORT)).
P=$(free_port)
"$CORRAL" start --name plain -i 2 -e "PORT=$P" -- node "$PLAIN" >/dev/null
wait_http "$P"
ka=$(under_load update "$P" ka corral_updates)
cl=$(under_load update "$P" close corral_updates)
row "corral update x3 (Node, reuseport)" "$ka" "$cl" "daemon $("$CORRAL" ping | awk '{print $NF}'), same workers"
ka=$(under_load kill-node "$P" ka kill_daemon)
kill_ms=$(cat "$OUT/kill-node.ka.event")
cl=$(under_load kill-node "$P" close kill_daemon)
row "SIGKILL of the corral daemon (Node)" "$ka" "$cl" "$kill_ms; $(cat "$OUT/kill-node.close.event")"
"$CORRAL" delete plain >/dev/null

for balance in shared round-robin; do
  P=$(free_port)
  "$CORRAL" start "$FIXTURE" --name "fx-$balance" -i 2 --listen "127.0.0.1:$P" --balance "$balance" >/dev/null
  wait_http "$P"
  ka=$(under_load "kill-$balance" "$P" ka kill_daemon)
  cl=$(under_load "kill-$balance" "$P" close kill_daemon)
  row "SIGKILL of the corral daemon (fixture, $balance)" "$ka" "$cl" "$(cat "$OUT/kill-$balance.ka.event"); $(cat "$OUT/kill-$balance.close.event")"
  "$CORRAL" delete "fx-$balance" >/dev/null
done
"$CORRAL" kill >/dev/null

# corral run, SIGURG.
P=$(free_port)
"$CORRAL" run --listen "127.0.0.1:$P" -i 2 -- "$FIXTURE" >"$OUT/run.log" 2>&1 &
RUN=$!
PIDS+=("$RUN")
wait_http "$P"
urg() { for _ in 1 2 3; do replace_binary; kill -URG "$RUN"; sleep 0.5; done; }
ka=$(under_load run "$P" ka urg)
cl=$(under_load run "$P" close urg)
row "corral run, SIGURG x3 (fixture)" "$ka" "$cl" "$(grep -c 'upgraded in place' "$OUT/run.log") upgrades logged"
stop "$RUN"

# PM2: update restarts every app; a killed daemon takes its apps along.
P=$(free_port)
PORT=$P "$PM2" start "$PLAIN" -i 2 --name plain >/dev/null
wait_http "$P"
ka=$(under_load pm2-update "$P" ka "$PM2" update)
wait_http "$P"
cl=$(under_load pm2-update "$P" close "$PM2" update)
row "pm2 update (Node)" "$ka" "$cl" "restarts every app"
wait_http "$P"
pm2_kill() { kill -9 "$(cat "$PM2_HOME/pm2.pid")"; sleep 1; "$PM2" ping >/dev/null; }
ka=$(under_load pm2-kill "$P" ka pm2_kill)
row "SIGKILL of PM2's daemon (Node)" "$ka" "" "then pm2 ping: $("$PM2" ls 2>/dev/null | grep -c online || true) online"
"$PM2" kill >/dev/null 2>&1 || true
