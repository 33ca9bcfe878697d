#!/usr/bin/env bash
# pg.sh: a private PostgreSQL cluster in a directory, for `scripts/up` (dev,
# persistent under .torpor/pg) and the end-to-end tests (throwaway, temp dir).
#
# Contract:
#   pg.sh init  DIR   create the cluster in DIR/data once (no-op if it exists)
#   pg.sh start DIR   init if needed, start it (no-op if running), create the
#                     database "torpor" once, print the libpq URL on stdout
#   pg.sh stop  DIR   stop it if running (fast shutdown, waits)
#   pg.sh url   DIR   print the libpq URL: postgresql:///torpor?host=DIR&user=postgres
#   pg.sh status DIR  exit 0 if running
# Sourcing the file defines the same operations as pg_init/pg_start/... .
#
# Why this shape: PostgreSQL refuses to run as root, so as root the server
# binaries run as the `postgres` user (created by the Debian package) with
# DIR owned by it; as any other user they run as that user. No TCP at all
# (listen_addresses=''): clients use the unix socket in DIR, with trust auth,
# so nothing collides with another cluster on the machine.

pg__die() { echo "pg.sh: $*" >&2; return 1; }

# The newest installed server version's bin dir.
pg__bindir() {
  local d
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  if [ ! -x "$d/pg_ctl" ]; then
    pg__die "no PostgreSQL server found under /usr/lib/postgresql (run scripts/install-deps)"
    return 1
  fi
  echo "$d"
}

# Run a server binary as the cluster owner.
pg__as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg__check_dir() {
  local dir=$1
  [ -n "$dir" ] || { pg__die "missing DIR"; return 1; }
  case "$dir" in /*) ;; *) pg__die "DIR must be absolute: $dir"; return 1 ;; esac
  # A unix socket path is limited to 107 bytes: DIR/.s.PGSQL.5432 must fit.
  [ ${#dir} -le 90 ] || { pg__die "DIR path too long for a unix socket (${#dir} > 90 chars): $dir"; return 1; }
}

pg_url() {
  pg__check_dir "$1" || return 1
  echo "postgresql:///torpor?host=$1&user=postgres"
}

pg_init() {
  local dir=$1 bin
  pg__check_dir "$dir" || return 1
  bin=$(pg__bindir) || return 1
  [ -f "$dir/data/PG_VERSION" ] && return 0
  mkdir -p "$dir" || return 1
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir" || return 1
    # The postgres user must be able to reach DIR through every parent.
    runuser -u postgres -- test -x "$dir" ||
      { pg__die "user postgres cannot reach $dir (a parent directory is not world-searchable)"; return 1; }
  fi
  rm -rf "$dir/data"
  pg__as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; pg__die "initdb failed in $dir"; return 1; }
}

pg_status() {
  local dir=$1 bin
  pg__check_dir "$dir" || return 1
  bin=$(pg__bindir) || return 1
  [ -f "$dir/data/PG_VERSION" ] || return 1
  pg__as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

pg_start() {
  local dir=$1 bin
  pg_init "$dir" || return 1
  bin=$(pg__bindir) || return 1
  if ! pg_status "$dir"; then
    # fsync stays on: the dev cluster keeps data across up/down. Tests pay
    # little for it (a handful of rows).
    pg__as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-k $dir -c listen_addresses='' -c max_connections=300" start >/dev/null ||
      { tail -n 20 "$dir/postgres.log" >&2; pg__die "PostgreSQL did not start in $dir"; return 1; }
  fi
  if ! psql -X -q -h "$dir" -U postgres -d postgres -Atc \
       "SELECT 1 FROM pg_database WHERE datname='torpor'" | grep -q 1; then
    psql -X -q -h "$dir" -U postgres -d postgres -c "CREATE DATABASE torpor" >/dev/null ||
      { pg__die "cannot create database torpor in $dir"; return 1; }
  fi
  pg_url "$dir"
}

pg_stop() {
  local dir=$1 bin
  pg__check_dir "$dir" || return 1
  bin=$(pg__bindir) || return 1
  pg_status "$dir" || return 0
  pg__as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null ||
    { pg__die "PostgreSQL in $dir did not stop"; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  cmd=${1:-}; dir=${2:-}
  case "$cmd" in
    init|start|stop|url|status) "pg_$cmd" "$dir" ;;
    *) echo "usage: pg.sh init|start|stop|url|status DIR" >&2; exit 2 ;;
  esac
fi
