#!/usr/bin/env bash
# Redis from Debian's redis-server: AOF on (appendfsync everysec), noeviction (an evicted counter
# would be a silently wrong number), data in the state directory.
#   deploy/redis.sh start|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

REDIS_DIR="$PLAYPULSE_STATE/redis"

start() {
  command -v redis-server >/dev/null || "$DEPLOY_DIR/install.sh"
  if pid_alive redis; then say "redis already running (pid $(cat "$RUN_DIR/redis.pid"))"; return 0; fi
  if redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    die "another redis already answers on $REDIS_HOST:$REDIS_PORT (not ours: no pid file)"
  fi
  mkdir -p "$REDIS_DIR"
  say "starting redis on $REDIS_HOST:$REDIS_PORT"
  redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --save "" --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$LOG_DIR/redis.log"
  local i
  for ((i = 0; i < 100; i++)); do
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  die "redis did not answer PING; see $LOG_DIR/redis.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid redis 15 ;;
  status) pid_alive redis && echo "redis running" || { echo "redis stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
