#!/usr/bin/env bash
# Prometheus from Debian, scraping the collector, the aggregator and the API every 5 s.
#   deploy/prometheus.sh start [--no-targets]|stop|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PROM_DIR="$PLAYPULSE_STATE/prometheus"

# targets JOB ADDR: the job's file_sd targets file (an empty list when ADDR is empty), replaced
# atomically so Prometheus never reads half of it.
targets() {
  local file="$PROM_DIR/targets/$1.json"
  if [ -n "$2" ]; then echo "[{\"targets\": [\"$2\"]}]"; else echo "[]"; fi > "$file.tmp"
  mv "$file.tmp" "$file"
}

start() {  # start [--no-targets]: without targets, until someone writes the targets files
  command -v prometheus >/dev/null || "$DEPLOY_DIR/install.sh"
  if pid_alive prometheus; then say "prometheus already running"; return 0; fi
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/targets"
  if [ "${1:-}" = "--no-targets" ]; then
    targets playpulse-ingest ""; targets playpulse-aggregator ""; targets playpulse-api ""
  else
    targets playpulse-ingest "$PLAYPULSE_INGEST_ADDR"
    targets playpulse-aggregator "$PLAYPULSE_AGGREGATOR_ADDR"
    targets playpulse-api "$PLAYPULSE_API_ADDR"
  fi
  sed -e "s|@TARGETS@|$PROM_DIR/targets|" -e "s|@RULES@|$DEPLOY_DIR/prometheus/alerts.yml|" \
      -e "s|@RECORDS@|$DEPLOY_DIR/prometheus/records.yml|" \
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
  start) start "${2:-}" ;;
  stop) stop_pid prometheus 15 ;;
  status) pid_alive prometheus && echo "prometheus running" || { echo "prometheus stopped"; exit 1; } ;;
  *) echo "usage: $0 start [--no-targets]|stop|status" >&2; exit 2 ;;
esac
