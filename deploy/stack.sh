#!/usr/bin/env bash
# The whole local stack: servers (Kafka, Redis, Prometheus) and Playpulse's services, in the background.
#   deploy/stack.sh up       idempotent: starts what is not running, waits until each answers
#   deploy/stack.sh down     stops everything it started, services first
#   deploy/stack.sh servers  only Kafka and Redis (what the tests need)
#   deploy/stack.sh status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PY="$PLAYPULSE_VENV/bin/python"
PLAYPULSE="$PLAYPULSE_VENV/bin/playpulse"
GEO_DB="$PLAYPULSE_STATE/geo/demo.mmdb"

# The demo's collector sees simulated viewers through X-Forwarded-For from loopback and looks them
# up in a small MaxMind-format database of made-up networks (ingest/geodb.py).
export PLAYPULSE_GEOIP_DB="${PLAYPULSE_GEOIP_DB:-$GEO_DB}"
export PLAYPULSE_TRUSTED_PROXIES="${PLAYPULSE_TRUSTED_PROXIES:-127.0.0.1/32,::1/128}"
export PLAYPULSE_KAFKA_BOOTSTRAP PLAYPULSE_REDIS_URL PLAYPULSE_INGEST_ADDR PLAYPULSE_API_ADDR PLAYPULSE_AGGREGATOR_ADDR

start_service() {  # NAME URL-TO-POLL CMD...
  local name="$1" url="$2" i; shift 2
  if pid_alive "$name"; then say "$name already running"; return 0; fi
  say "starting $name"
  ( exec "$@" >> "$LOG_DIR/$name.log" 2>&1 ) &
  echo $! > "$RUN_DIR/$name.pid"
  for ((i = 0; i < 300; i++)); do
    curl -fs "$url" >/dev/null 2>&1 && return 0
    pid_alive "$name" || break
    sleep 0.1
  done
  tail -20 "$LOG_DIR/$name.log" >&2
  die "$name did not become healthy at $url"
}

servers() {
  "$DEPLOY_DIR/install.sh"
  "$DEPLOY_DIR/redis.sh" start
  "$DEPLOY_DIR/kafka.sh" start
}

up() {
  servers
  "$DEPLOY_DIR/prometheus.sh" start
  if [ "$PLAYPULSE_GEOIP_DB" = "$GEO_DB" ] && [ ! -f "$GEO_DB" ]; then
    mkdir -p "$(dirname "$GEO_DB")"
    "$PY" -c 'import sys; from ingest.geodb import build_db; build_db(sys.argv[1])' "$GEO_DB"
  fi
  "$PLAYPULSE" playbacks add-demo >/dev/null
  start_service ingest "http://$PLAYPULSE_INGEST_ADDR/healthz" "$PLAYPULSE" ingest
  start_service aggregator "http://$PLAYPULSE_AGGREGATOR_ADDR/healthz" "$PLAYPULSE" aggregate
  start_service api "http://$PLAYPULSE_API_ADDR/healthz" "$PLAYPULSE" api
  say "collector: http://$PLAYPULSE_INGEST_ADDR/analytics/log   api: http://$PLAYPULSE_API_ADDR/api   prometheus: http://$PLAYPULSE_PROMETHEUS_ADDR"
}

down() {
  stop_pid api 15
  stop_pid ingest 15
  stop_pid aggregator 30
  "$DEPLOY_DIR/prometheus.sh" stop
  "$DEPLOY_DIR/kafka.sh" stop
  "$DEPLOY_DIR/redis.sh" stop
}

status() {
  local name rc=0
  for name in kafka redis prometheus ingest aggregator api; do
    if pid_alive "$name"; then echo "$name: running"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  servers) servers ;;
  status) status ;;
  *) echo "usage: $0 up|down|servers|status" >&2; exit 2 ;;
esac
