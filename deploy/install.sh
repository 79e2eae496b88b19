#!/usr/bin/env bash
# Installs what the stack needs and is missing: Redis, Prometheus, and for the tests Chromium
# with its chromedriver and Node with npm, from Debian; the Kafka broker's jars from Maven
# Central; the Livepeer JS SDK from npm.
# Idempotent; fast when everything is already there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
# The live page's browser test: Debian's Chromium and its matching chromedriver.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# Node and npm run the official Livepeer JS SDK in the API's compatibility test.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need_apt+=(maven)
  say "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v java >/dev/null || die "java (17+) is required for Kafka"
command -v mvn >/dev/null || die "maven is required to fetch Kafka's jars"

stamp="$KAFKA_LIBS/.pom.sha256"
want="$(sha256sum "$DEPLOY_DIR/kafka/pom.xml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "resolving the Kafka broker's jars from Maven Central"
  rm -rf "$KAFKA_LIBS"
  mvn -B -q -f "$DEPLOY_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
  echo "$want" > "$stamp"
fi

# The official Livepeer JS SDK that tests/api/test_sdk_integration.py runs, pinned by its lock file.
js_dir="$REPO_DIR/tests/api/livepeer_js"
if command -v npm >/dev/null; then
  js_stamp="$js_dir/node_modules/.lock.sha256"
  js_want="$(sha256sum "$js_dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$js_stamp" 2>/dev/null)" != "$js_want" ]; then
    say "installing the Livepeer JS SDK for the tests (npm ci)"
    if (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error); then
      echo "$js_want" > "$js_stamp"
    else
      say "warning: npm ci failed; the JS SDK test retries it, and skips only if npm is unreachable"
    fi
  fi
fi
