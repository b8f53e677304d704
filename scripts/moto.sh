#!/usr/bin/env bash
# Starts (or stops) moto server on 127.0.0.1 for the local stack, through
# scripts/moto_server.py, which makes each DynamoDB request atomic as on AWS.
#   scripts/moto.sh start   start if not running, wait until ready
#   scripts/moto.sh stop    stop the server this script started
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${MOTO_PORT:-4566}"
STATE=.local/moto
mkdir -p "$STATE"
case "${1:-start}" in
  start)
    if curl -fsS "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; then
      exit 0
    fi
    bash scripts/venv.sh
    nohup .venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$PORT" >"$STATE/server.log" 2>&1 &
    echo $! >"$STATE/pid"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; then
        echo "moto listening on http://127.0.0.1:$PORT (log: $STATE/server.log)"
        exit 0
      fi
      sleep 0.2
    done
    echo "moto did not start; see $STATE/server.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$STATE/pid" ]; then
      kill "$(cat "$STATE/pid")" 2>/dev/null || true
      rm -f "$STATE/pid"
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
