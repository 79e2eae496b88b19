#!/usr/bin/env bash
# Prometheus from Debian, scraping the collector, the aggregator and the API every 5 s.
#   deploy/prometheus.sh start|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PROM_DIR="$PLAYPULSE_STATE/prometheus"

start() {
  command -v prometheus >/dev/null || "$DEPLOY_DIR/install.sh"
  if pid_alive prometheus; then say "prometheus already running"; return 0; fi
  mkdir -p "$PROM_DIR/data"
  sed -e "s/@INGEST@/$PLAYPULSE_INGEST_ADDR/" -e "s/@API@/$PLAYPULSE_API_ADDR/" \
      -e "s/@AGGREGATOR@/$PLAYPULSE_AGGREGATOR_ADDR/" -e "s|@RULES@|$DEPLOY_DIR/prometheus/alerts.yml|" \
      "$DEPLOY_DIR/prometheus/prometheus.yml" > "$PROM_DIR/prometheus.yml"
  promtool check config "$PROM_DIR/prometheus.yml" >/dev/null
  say "starting prometheus on $PLAYPULSE_PROMETHEUS_ADDR"
  ( exec prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
      --web.listen-address="$PLAYPULSE_PROMETHEUS_ADDR" >> "$LOG_DIR/prometheus.log" 2>&1 ) &
  echo $! > "$RUN_DIR/prometheus.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    curl -fs "http://$PLAYPULSE_PROMETHEUS_ADDR/-/ready" >/dev/null 2>&1 && return 0
    pid_alive prometheus || break
    sleep 0.1
  done
  die "prometheus did not become ready; see $LOG_DIR/prometheus.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid prometheus 15 ;;
  status) pid_alive prometheus && echo "prometheus running" || { echo "prometheus stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
