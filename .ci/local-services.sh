#!/usr/bin/env bash
# Private Redis and PostgreSQL for presencehub, in a project-local data folder.
#
#   .ci/local-services.sh start NAME   start (installing what is missing, when root) and print env lines
#   .ci/local-services.sh stop NAME    stop them
#   .ci/local-services.sh env NAME     print the env lines only
#
# NAME is dev (make run) or bench (make bench); each has its own folder under
# .data/ and its own loopback ports, so they never touch the machine's own
# Redis (6379) or PostgreSQL (5432).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-}
name=${2:-dev}
case $name in
  dev) rport=${PRESENCEHUB_DEV_REDIS_PORT:-6391}; pport=${PRESENCEHUB_DEV_PG_PORT:-5441} ;;
  bench) rport=${PRESENCEHUB_BENCH_REDIS_PORT:-6393}; pport=${PRESENCEHUB_BENCH_PG_PORT:-5443} ;;
  *) echo "unknown name $name (dev or bench)" >&2; exit 2 ;;
esac
dir=$root/.data/$name
mkdir -p "$dir"

log() { echo "local-services: $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and I am not root: install it with: sudo apt-get install -y $2"; exit 1
  fi
  log "installing $2 with apt-get"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] && command -v initdb >/dev/null; then d=$(dirname "$(command -v initdb)"); fi
  echo "$d"
}

ensure_installed() {
  command -v redis-server >/dev/null || apt_install redis-server redis-server
  [ -n "$(pg_bin)" ] || apt_install postgres postgresql
}

# As root PostgreSQL refuses to run: run it as nobody.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

pgdata() {
  # nobody must be able to reach the data folder; if the checkout is not
  # traversable for it, keep the data in a folder of its own under /tmp.
  if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -x "$dir" 2>/dev/null; then
    echo "/tmp/presencehub-$name-$(echo "$root" | md5sum | cut -c1-8)/pg"
  else
    echo "$dir/pg"
  fi
}

env_lines() {
  echo "PRESENCEHUB_REDIS_URL=redis://127.0.0.1:$rport/0"
  echo "PRESENCEHUB_DATABASE_URL=postgres://postgres@127.0.0.1:$pport/presencehub?sslmode=disable"
}

start() {
  ensure_installed
  if ! redis-cli -p "$rport" ping >/dev/null 2>&1; then
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --notify-keyspace-events 'Kg$x' >/dev/null
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    log "redis on 127.0.0.1:$rport"
  fi
  local bin data sock
  bin=$(pg_bin)
  data=$(pgdata)
  sock=$(dirname "$data")
  mkdir -p "$sock"
  [ "$(id -u)" = 0 ] && chown nobody "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$sock/initdb.log" 2>&1 || { cat "$sock/initdb.log" >&2; exit 1; }
  fi
  if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$data" -w -l "$sock/postgres.log" \
      -o "-p $pport -k $sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
    log "postgres on 127.0.0.1:$pport (data $data)"
  fi
  if ! psql -h 127.0.0.1 -p "$pport" -U postgres -tAc "select 1 from pg_database where datname='presencehub'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$pport" -U postgres -qc "create database presencehub" >/dev/null
  fi
  env_lines
}

stop() {
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  local bin data
  bin=$(pg_bin)
  data=$(pgdata)
  if [ -n "$bin" ] && [ -f "$data/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
  fi
  log "stopped $name services"
}

case $action in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  *) echo "usage: $0 start|stop|env dev|bench" >&2; exit 2 ;;
esac
