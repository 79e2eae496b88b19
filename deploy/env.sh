# Shared settings for the deploy scripts: every address and port comes from the environment,
# with the local defaults documented in README.md. Sourced, not run.
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
PLAYPULSE_STATE="${PLAYPULSE_STATE:-$REPO_DIR/.state}"
PLAYPULSE_VENV="${PLAYPULSE_VENV:-$REPO_DIR/.venv}"
PLAYPULSE_KAFKA_BOOTSTRAP="${PLAYPULSE_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
KAFKA_HOST="${PLAYPULSE_KAFKA_BOOTSTRAP%:*}"
KAFKA_PORT="${PLAYPULSE_KAFKA_BOOTSTRAP##*:}"
PLAYPULSE_KAFKA_CONTROLLER_PORT="${PLAYPULSE_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
PLAYPULSE_KAFKA_HEAP="${PLAYPULSE_KAFKA_HEAP:-768m}"
PLAYPULSE_REDIS_URL="${PLAYPULSE_REDIS_URL:-redis://127.0.0.1:6379/0}"
_redis_hostport="${PLAYPULSE_REDIS_URL#redis://}"; _redis_hostport="${_redis_hostport%%/*}"
REDIS_HOST="${_redis_hostport%:*}"
REDIS_PORT="${_redis_hostport##*:}"
PLAYPULSE_PROMETHEUS_ADDR="${PLAYPULSE_PROMETHEUS_ADDR:-127.0.0.1:9090}"
PLAYPULSE_INGEST_ADDR="${PLAYPULSE_INGEST_ADDR:-127.0.0.1:8081}"
PLAYPULSE_API_ADDR="${PLAYPULSE_API_ADDR:-127.0.0.1:8080}"
PLAYPULSE_AGGREGATOR_ADDR="${PLAYPULSE_AGGREGATOR_ADDR:-127.0.0.1:8082}"
KAFKA_LIBS="${PLAYPULSE_KAFKA_LIBS:-$REPO_DIR/.state/kafka-libs}"
LOG_DIR="$PLAYPULSE_STATE/logs"
RUN_DIR="$PLAYPULSE_STATE/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"

say() { printf '[playpulse] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# pid_alive NAME: true when the pid file NAME.pid points at a running process.
pid_alive() {
  local f="$RUN_DIR/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_pid NAME [SECONDS]: SIGTERM, wait, then SIGKILL; removes the pid file.
stop_pid() {
  local name="$1" wait_s="${2:-30}" pid i
  local f="$RUN_DIR/$name.pid"
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name did not stop in ${wait_s}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}
