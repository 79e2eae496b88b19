#!/usr/bin/env bash
# `make demo`: the whole stack plus simulated players in the foreground. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

export PLAYPULSE_REDIS_URL
PLAYPULSE="$PLAYPULSE_VENV/bin/playpulse"
DEMO_KEY_ID=""
cleanup() {
  if [ -n "$DEMO_KEY_ID" ]; then "$PLAYPULSE" keys revoke "$DEMO_KEY_ID" >/dev/null 2>&1 || true; fi
  "$DEPLOY_DIR/stack.sh" down
}
trap cleanup EXIT
"$DEPLOY_DIR/stack.sh" up
# A key for the live page, revoked when the demo stops. It travels in the URL's fragment,
# which the browser never sends to a server; the page keeps it for the tab only.
key_out="$("$PLAYPULSE" keys create --name demo-live-page)"
DEMO_KEY_ID="$(sed -n 's/^id: *//p' <<<"$key_out")"
DEMO_KEY="$(sed -n 's/^secret: *//p' <<<"$key_out")"
cat >&2 <<MSG

Playpulse is running.
  live page   http://$PLAYPULSE_API_ADDR/live#key=$DEMO_KEY
  api         http://$PLAYPULSE_API_ADDR/api   (the same key: Authorization: Bearer ...)
  collector   POST http://$PLAYPULSE_INGEST_ADDR/analytics/log   (metrics: /metrics)
  prometheus  http://$PLAYPULSE_PROMETHEUS_ADDR/graph
  logs        $LOG_DIR
  beacons     the Kafka topic 'beacons' on $PLAYPULSE_KAFKA_BOOTSTRAP
Simulated players are posting now; the log of every send is $PLAYPULSE_STATE/simulate.jsonl.
Ctrl-C stops everything.

MSG
"$PLAYPULSE" simulate --collector "http://$PLAYPULSE_INGEST_ADDR" \
  --players "${PLAYPULSE_DEMO_PLAYERS:-200}" --duration "${PLAYPULSE_DEMO_SECONDS:-3600}" \
  --log "$PLAYPULSE_STATE/simulate.jsonl"
