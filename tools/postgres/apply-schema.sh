#!/usr/bin/env bash
# Applies OrleansMixtral's PostgreSQL schema (the tables and queries of Orleans' ADO.NET clustering and grain storage,
# tools/postgres/schema-*.sql) to a database. Idempotent: run it again after an upgrade.
#   tools/postgres/apply-schema.sh "host=db.example port=5432 dbname=orleansmixtral user=mixtral"
# The argument is anything psql takes as a connection (a libpq connection string or postgresql:// URL); PGPASSWORD or
# ~/.pgpass give the password. Needs psql (Debian: postgresql-client).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 CONNECTION (e.g. \"host=127.0.0.1 port=5432 dbname=orleansmixtral user=mixtral\")" >&2; exit 2; }
for part in main clustering persistence; do
  PGOPTIONS="-c client_min_messages=warning" psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 --dbname "$1" -f "$here/schema-$part.sql" >/dev/null
done
