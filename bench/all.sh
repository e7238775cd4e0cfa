#!/usr/bin/env bash
# Every comparison in one run, one after another on this machine (issue 14's list):
# corral's modes vs Node's cluster module vs PM2, close and keep-alive (node.sh); the
# hand-off's supervisor CPU per connection beside the floor and Node's primary, and
# latency at -c1 per mode (dispatch.sh); each worker's share at 8 workers (balance.sh);
# crash -> served (crash.sh); the daemon's RSS at 0/100/1000 apps (apps.sh); upgrades
# in place and daemon deaths under load, beside PM2's update and death (upgrade.sh); Bun.serve
# under corral beside Bun's own reusePort processes (bun.sh, when bun is installed). Numbers
# on a shared 2-core machine are noisy: read the ratios, and run it twice.
#
#   bench/all.sh [SECONDS_PER_RUN]        (needs wrk, node, npm, gcc, cargo, python3)
set -euo pipefail
cd "$(dirname "$0")"
D=${1:-10}
bash node.sh "$D"
bash dispatch.sh "$D"
bash balance.sh "$D" 8
bash crash.sh 10
bash apps.sh 1000
bash upgrade.sh "$D"
if command -v bun >/dev/null; then bash bun.sh "$D"; else echo "bench: bun.sh skipped: bun is not installed (npm install @oven/bun-linux-x64)"; fi
