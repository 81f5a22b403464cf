#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: `source scripts/pg-throwaway.sh` then
# `pg_throwaway_start` (installs Debian's postgresql if missing when run as root, creates a
# cluster in a temp directory owned by an unprivileged user, listening on 127.0.0.1 and a
# socket in that directory, and exports MCP_KEYS_TEST_POSTGRES_URL, _PGDATA and _PGBIN)
# and `pg_throwaway_stop` (stops it and removes the directory). Nothing else is touched.

pg_throwaway_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_throwaway_as() {  # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_throwaway_start() {
  local bin dir port
  bin=$(pg_throwaway_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      bin=$(pg_throwaway_bin)
    fi
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "pg-throwaway: PostgreSQL is not installed (apt-get install postgresql)" >&2
    return 1
  fi
  dir=$(mktemp -d /tmp/mcp-keys-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  chmod 0700 "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pg_throwaway_as "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  # Settings in the cluster's own config, so a test that stops and starts it gets them too.
  printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 200\n" \
    "$port" "$dir" | pg_throwaway_as tee -a "$dir/data/postgresql.conf" >/dev/null
  pg_throwaway_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null
  export MCP_KEYS_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  export MCP_KEYS_TEST_PGDATA="$dir/data"
  export MCP_KEYS_TEST_PGBIN="$bin"
  PG_THROWAWAY_DIR="$dir"
  echo "pg-throwaway: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

pg_throwaway_stop() {
  if [ -n "${PG_THROWAWAY_DIR:-}" ] && [ -d "$PG_THROWAWAY_DIR" ]; then
    pg_throwaway_as "$(pg_throwaway_bin)/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m immediate stop \
      >/dev/null 2>&1 || true
    rm -rf "$PG_THROWAWAY_DIR"
  fi
}
