#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and trials (Debian's postgresql package): a new cluster in DIR, listening on
# 127.0.0.1:PORT only (its socket in DIR too), trust authentication for the superuser "mixtral", a database
# "orleansmixtral" with the project's schema applied. Runs as the invoking user, or as "postgres" when invoked as root
# (PostgreSQL refuses to run as root).
#   tools/postgres/local-postgres.sh start DIR PORT   prints the Npgsql connection string (the silos' --Postgres) last
#   tools/postgres/local-postgres.sh stop DIR         stops it (immediate shutdown) and removes DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[ -x "$bin/initdb" ] || { echo "error: PostgreSQL's server is not installed (Debian: apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    [ $# -eq 3 ] || { echo "usage: $0 start DIR PORT" >&2; exit 2; }
    dir="$2"; port="$3"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; chmod 700 "$dir"; fi
    as_owner "$bin/initdb" --pgdata "$dir/data" --username mixtral --auth trust --encoding UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # fsync off: a test server that is thrown away loses nothing it needs to keep
    as_owner "$bin/pg_ctl" --pgdata "$dir/data" --log "$dir/server.log" --wait --timeout 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    "$bin/createdb" --host 127.0.0.1 --port "$port" --username mixtral orleansmixtral
    "$here/apply-schema.sh" "host=127.0.0.1 port=$port dbname=orleansmixtral user=mixtral"
    echo "Host=127.0.0.1;Port=$port;Database=orleansmixtral;Username=mixtral"
    ;;
  stop)
    [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    dir="$2"
    if [ -f "$dir/data/postmaster.pid" ]; then as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode immediate --wait stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
