#!/usr/bin/env bash
# Benchmarks: print their figures (ratios measured in one run), assert nothing.
# Uses its own servers like the tests (other ports and state than `make up`).
set -euo pipefail
export PLAYPULSE_STATE="${PLAYPULSE_BENCH_STATE:-$(cd "$(dirname "$0")/.." && pwd)/.state/bench}"
export PLAYPULSE_KAFKA_BOOTSTRAP="${PLAYPULSE_BENCH_KAFKA_BOOTSTRAP:-127.0.0.1:29092}"
export PLAYPULSE_REDIS_URL="${PLAYPULSE_BENCH_REDIS_URL:-redis://127.0.0.1:26379/0}"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null; }
"$DEPLOY_DIR/kafka.sh" stop; "$DEPLOY_DIR/redis.sh" stop
rm -rf "$PLAYPULSE_STATE/kafka" "$PLAYPULSE_STATE/redis"
trap '"$DEPLOY_DIR/kafka.sh" stop; "$DEPLOY_DIR/redis.sh" stop' EXIT
"$DEPLOY_DIR/stack.sh" servers
cd "$REPO_DIR"
# The peer baseline (quix-streams) is a benchmark-only dependency.
"$PLAYPULSE_VENV/bin/pip" install -q -e "$REPO_DIR[bench]"
"$PLAYPULSE_VENV/bin/python" -m tests.bench.bench_ingest "$@"
"$PLAYPULSE_VENV/bin/python" -m tests.bench.bench_aggregate
"$PLAYPULSE_VENV/bin/python" -m tests.bench.bench_pipeline
"$PLAYPULSE_VENV/bin/python" -m tests.bench.bench_api
