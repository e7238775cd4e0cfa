#!/usr/bin/env bash
# The daemon's cost per app: its RSS idle, then with 100 and 1000 one-worker apps (the
# worker is `sleep`, so only corral's own bookkeeping grows), and KiB per app.
#
#   bench/apps.sh [MAX_APPS]        (needs cargo; 1000 apps need ~1000 free pids)
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-1000}
cargo build --release -p corral -q
OUT=$(mktemp -d)
export CORRAL_HOME=$OUT/corral
CORRAL=$PWD/target/release/corral
cleanup() { $CORRAL kill >/dev/null 2>&1 || true; rm -rf "$OUT"; }
trap cleanup EXIT
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
threads() { awk '/Threads/ {print $2}' "/proc/$1/status"; }

$CORRAL ping >/dev/null
D=$(pgrep -f "$CORRAL daemon" | head -1)
sleep 1
IDLE=$(rss_kib "$D")
echo "idle daemon: ${IDLE} KiB RSS, $(threads "$D") threads"
n=0
for target in 100 "$MAX"; do
  while [ "$n" -lt "$target" ]; do
    n=$((n + 1))
    $CORRAL start sleep --name "a$n" -i 1 -- 100000 >/dev/null
  done
  sleep 3
  R=$(rss_kib "$D")
  awk -v n="$n" -v r="$R" -v i="$IDLE" -v t="$(threads "$D")" 'BEGIN {
    printf "%d apps: %d KiB RSS, %d threads, %.1f KiB per app\n", n, r, t, (r - i) / n }'
done
