#!/usr/bin/env bash
# `make demo`: the whole stack plus simulated players in the foreground. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

trap '"$DEPLOY_DIR/stack.sh" down' EXIT
"$DEPLOY_DIR/stack.sh" up
cat >&2 <<MSG

Playpulse is running.
  collector   POST http://$PLAYPULSE_INGEST_ADDR/analytics/log   (metrics: /metrics)
  prometheus  http://$PLAYPULSE_PROMETHEUS_ADDR/graph
  logs        $LOG_DIR
  beacons     the Kafka topic 'beacons' on $PLAYPULSE_KAFKA_BOOTSTRAP
Simulated players are posting now; the log of every send is $PLAYPULSE_STATE/simulate.jsonl.
Ctrl-C stops everything.

MSG
"$PLAYPULSE_VENV/bin/playpulse" simulate --collector "http://$PLAYPULSE_INGEST_ADDR" \
  --players "${PLAYPULSE_DEMO_PLAYERS:-200}" --duration "${PLAYPULSE_DEMO_SECONDS:-3600}" \
  --log "$PLAYPULSE_STATE/simulate.jsonl"
