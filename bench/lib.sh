# Helpers shared by the bench scripts: free ports, waiting for a server, reading wrk.
# shellcheck shell=bash

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: nothing answers on port $1" >&2; exit 1
}

rps() { grep -o 'Requests/sec: *[0-9.]*' "$1" | awk '{print $2}'; }
total() { grep -o '[0-9]* requests in' "$1" | awk '{print $1}'; }

errors() { # total failed requests wrk saw: socket errors plus non-2xx
  awk '/Socket errors/ { gsub(","," "); s+=$4+$6+$8+$10 } /Non-2xx/ { s+=$5 } END { print s+0 }' "$1"
}

stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

need() { # tools...: exits 2 naming the first one that is missing
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (apt-get install wrk nodejs hyperfine)" >&2; exit 2; }
  done
}

# A scratch directory (OUT) and the processes a bench starts (PIDS), both gone on exit.
scratch() {
  OUT=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$OUT"' EXIT
}
