#!/usr/bin/env bash
# Print the bin directory of a PostgreSQL 15 server that has TimescaleDB, for `make test-timescaledb`.
#
# In this order: the system's own (Timescale's timescaledb-2-postgresql-15 package); a
# private tree built earlier in var/timescaledb (git-ignored, reused); a private tree built
# now from the source tarball named by TIMESCALEDB_SRC (relative to the repository root).
# Otherwise it fails and says how to install TimescaleDB.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM=/usr/lib/postgresql/15
TREE=$PWD/var/timescaledb
PRIVATE=$TREE/usr/lib/postgresql/15
if ls "$SYSTEM"/lib/timescaledb*.so >/dev/null 2>&1; then
  echo "$SYSTEM/bin"
  exit 0
fi
if ls "$PRIVATE"/lib/timescaledb*.so >/dev/null 2>&1 && [ -x "$PRIVATE/bin/initdb" ]; then
  echo "$PRIVATE/bin"
  exit 0
fi
if [ -n "${TIMESCALEDB_SRC:-}" ]; then
  if [ ! -f "$TIMESCALEDB_SRC" ]; then
    echo "TIMESCALEDB_SRC=$TIMESCALEDB_SRC: no such file" >&2
    exit 1
  fi
  echo "building TimescaleDB from $TIMESCALEDB_SRC into var/timescaledb (a few minutes, once)" >&2
  start=$(date +%s)
  rm -rf "$TREE"
  bash scripts/build-timescaledb.sh "$TIMESCALEDB_SRC" "$TREE" >&2
  echo "built in $(($(date +%s) - start)) s" >&2
  echo "$PRIVATE/bin"
  exit 0
fi
cat >&2 <<'HELP'
TimescaleDB is not installed for PostgreSQL 15. Either install it from Timescale's apt repository
(https://docs.timescale.com/self-hosted/latest/install/installation-linux/):
  echo "deb https://packagecloud.io/timescale/timescaledb/debian/ $(lsb_release -cs) main" \
    > /etc/apt/sources.list.d/timescaledb.list
  wget -qO- https://packagecloud.io/timescale/timescaledb/gpgkey | gpg --dearmor \
    > /etc/apt/trusted.gpg.d/timescaledb.gpg
  apt-get update && apt-get install timescaledb-2-postgresql-15
or build it into var/timescaledb from a source tarball (2.28.x for PostgreSQL 15):
  make test-timescaledb TIMESCALEDB_SRC=path/to/timescaledb-2.28.3.tar.gz
HELP
exit 1
