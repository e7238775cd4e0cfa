#!/usr/bin/env bash
# corral's daemon next to PM2's, same machine, one run: RSS idle and with 2 apps x 2
# workers (the same unmodified Node app), and `ls` latency (hyperfine).
#
#   bench/daemon.sh        (needs node, npm, hyperfine; installs pm2 under bench/ if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
for tool in node npm cargo hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (apt-get install hyperfine)" >&2; exit 2; }
done
[ -x bench/node_modules/.bin/pm2 ] || npm install --prefix bench --no-audit --no-fund --no-save pm2@6 >/dev/null
cargo build --release -p corral -q
OUT=$(mktemp -d)
export CORRAL_HOME=$OUT/corral PM2_HOME=$OUT/pm2
CORRAL=$PWD/target/release/corral
PM2=$PWD/bench/node_modules/.bin/pm2
APP=$PWD/examples/node/plain.js
cleanup() { $CORRAL kill >/dev/null 2>&1 || true; $PM2 kill >/dev/null 2>&1 || true; rm -rf "$OUT"; }
trap cleanup EXIT
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

$CORRAL ping >/dev/null
CD=$(pgrep -f "$CORRAL daemon" | head -1)
$PM2 ping >/dev/null
PD=$(cat "$PM2_HOME/pm2.pid")
sleep 1
echo "idle daemon RSS: corral $(rss_kib "$CD") KiB, pm2 $(rss_kib "$PD") KiB"

for n in 1 2; do
  P=$(free_port); $CORRAL start "$APP" --name "app$n" -i 2 --listen "127.0.0.1:$P" >/dev/null
  P=$(free_port); PORT=$P $PM2 start "$APP" --name "app$n" -i 2 >/dev/null
done
sleep 3
echo "daemon RSS with 2 apps x 2 workers: corral $(rss_kib "$CD") KiB, pm2 $(rss_kib "$PD") KiB"
hyperfine --warmup 3 --runs 30 -N "$CORRAL ls" "$PM2 ls" --export-markdown "$OUT/ls.md" >/dev/null
cat "$OUT/ls.md"
