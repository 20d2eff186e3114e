#!/usr/bin/env bash
# Zero-downtime reload of the instance on PORT (default 4100) on this host:
# starts the new release binary on the same port (SO_REUSEPORT), waits until
# it listens, then sends SIGTERM to the old process, which stops accepting,
# closes its sockets with 1012 and cleans its Redis entries. Browsers
# reconnect to the new process and catch up from history. Without Redis,
# the new process listens at once but waits (up to 30 s) for the old one to
# let the data file (DATA_DIR) go, then serves it: same rooms, same epochs.
#   PORT=4100 scripts/reload.sh        (same environment as the running one)
# Not for an instance under PM2 or systemd: they would restart the process
# this script stops (use `pm2 reload` / a rolling restart there).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-4100}
binary=${SERVER_BIN:-target/release/server}
log=${RELOAD_LOG:-server-$port.log}

if [[ -z "${REDIS_URL:-}" && "${DATA_DIR:-data}" == "memory" ]]; then
  echo "note: DATA_DIR=memory keeps the rooms in the process: the new one starts empty" >&2
fi

old=$(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
[[ -n "$old" ]] || echo "nothing listens on port $port: starting a first instance"

PORT=$port nohup "$binary" >>"$log" 2>&1 &
new=$!
for _ in $(seq 100); do
  if ss -Hltnp "sport = :$port" | grep -q "pid=$new,"; then
    break
  fi
  kill -0 "$new" 2>/dev/null || { echo "the new process exited; see $log" >&2; exit 1; }
  sleep 0.1
done
ss -Hltnp "sport = :$port" | grep -q "pid=$new," || { echo "the new process does not listen; see $log" >&2; exit 1; }
echo "new process $new listens on $port"
for pid in $old; do
  echo "draining old process $pid"
  kill -TERM "$pid"
done
for pid in $old; do
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
done
echo "reloaded: $new serves port $port (logs: $log)"
