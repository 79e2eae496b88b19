#!/usr/bin/env bash
# Runs the test suite against real servers of its own (other ports and state than `make up`'s),
# started for the run and stopped afterwards, whatever the outcome. Extra arguments go to pytest.
set -euo pipefail
export PLAYPULSE_STATE="${PLAYPULSE_TEST_STATE:-$(cd "$(dirname "$0")/.." && pwd)/.state/test}"
export PLAYPULSE_KAFKA_BOOTSTRAP="${PLAYPULSE_TEST_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"
export PLAYPULSE_REDIS_URL="${PLAYPULSE_TEST_REDIS_URL:-redis://127.0.0.1:16379/0}"
export PLAYPULSE_PROMETHEUS_ADDR="${PLAYPULSE_TEST_PROMETHEUS_ADDR:-127.0.0.1:19090}"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# A fresh broker and Redis each run: tests must not depend on what an earlier run left.
"$DEPLOY_DIR/kafka.sh" stop; "$DEPLOY_DIR/redis.sh" stop
rm -rf "$PLAYPULSE_STATE/kafka" "$PLAYPULSE_STATE/redis" "$PLAYPULSE_STATE/prometheus"
trap '"$DEPLOY_DIR/kafka.sh" stop; "$DEPLOY_DIR/redis.sh" stop; "$DEPLOY_DIR/prometheus.sh" stop' EXIT
"$DEPLOY_DIR/stack.sh" servers
# Prometheus scrapes nothing until a test writes its targets files (tests/test_prometheus_integration.py).
"$DEPLOY_DIR/prometheus.sh" start --no-targets

set +e
"$PLAYPULSE_VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  say "pytest collected no tests: that is a failure"
  exit 1
fi
exit "$rc"
