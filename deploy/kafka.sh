#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker+controller in one JVM) from Maven Central jars.
#   deploy/kafka.sh start   format once, start, return when the broker answers a metadata request
#   deploy/kafka.sh stop    SIGTERM (clean shutdown), SIGKILL after 30 s
#   deploy/kafka.sh status
# Single-node settings: every replication factor is 1, min ISR 1 (see server.properties below).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

KAFKA_DIR="$PLAYPULSE_STATE/kafka"
CONF="$KAFKA_DIR/server.properties"

write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat > "$CONF" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$PLAYPULSE_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$PLAYPULSE_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=6
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=33554432
log.retention.hours=168
PROPS
}

java_cmd() {
  local heap="$1"; shift
  java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

start() {
  [ -d "$KAFKA_LIBS" ] || "$DEPLOY_DIR/install.sh"
  if pid_alive kafka; then say "kafka already running (pid $(cat "$RUN_DIR/kafka.pid"))"; return 0; fi
  if (exec 3<>"/dev/tcp/$KAFKA_HOST/$KAFKA_PORT") 2>/dev/null; then
    die "something already listens on $PLAYPULSE_KAFKA_BOOTSTRAP (not ours: no pid file)"
  fi
  write_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cid
    cid="$(python3 -c 'import base64,uuid
while True:
    c = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not c.startswith("-"): print(c); break')"
    say "formatting Kafka storage (cluster $cid)"
    java_cmd 256m kafka.tools.StorageTool format -t "$cid" -c "$CONF" >> "$LOG_DIR/kafka.log" 2>&1 \
      || die "kafka storage format failed; see $LOG_DIR/kafka.log"
  fi
  say "starting kafka on $PLAYPULSE_KAFKA_BOOTSTRAP"
  # exec so the pid is the JVM's own: SIGTERM then reaches Kafka's shutdown hook.
  ( exec java -Xms"$PLAYPULSE_KAFKA_HEAP" -Xmx"$PLAYPULSE_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dkafka.logs.dir="$LOG_DIR" \
      -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$CONF" >> "$LOG_DIR/kafka.log" 2>&1 ) &
  echo $! > "$RUN_DIR/kafka.pid"
  "$PLAYPULSE_VENV/bin/python" "$DEPLOY_DIR/kafka_ready.py" "$PLAYPULSE_KAFKA_BOOTSTRAP" "$(cat "$RUN_DIR/kafka.pid")" \
    || { tail -20 "$LOG_DIR/kafka.log" >&2; die "kafka did not become ready"; }
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid kafka 30 ;;
  status) pid_alive kafka && echo "kafka running" || { echo "kafka stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
