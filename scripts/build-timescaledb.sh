#!/usr/bin/env bash
# Build TimescaleDB from a source tarball into a private copy of the PostgreSQL 15 server tree.
#
# Usage: build-timescaledb.sh TARBALL ROOT
# Then ROOT/usr/lib/postgresql/15/bin/{initdb,pg_ctl,postgres} run a server that can
# preload TimescaleDB, while the machine's own PostgreSQL never sees the extension (the
# binaries find their lib/ and share/ folders relative to themselves). 2.28.x is the last
# TimescaleDB line for PostgreSQL 15 (it needs 15.10 or later). About 4 minutes on 2 cores.
# Needs postgresql-server-dev-15, cmake and gcc; installs them when run as root.
set -euo pipefail
TARBALL=${1:?source tarball}
ROOT=${2:?folder for the private tree}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
JOBS=${JOBS:-$(nproc)}

if ! dpkg -s postgresql-server-dev-15 >/dev/null 2>&1 || ! command -v cmake >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "building TimescaleDB needs: apt-get install postgresql-server-dev-15 cmake gcc make libssl-dev libkrb5-dev" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-server-dev-15 cmake gcc make libssl-dev libkrb5-dev
fi
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
tar -xzf "$TARBALL" -C "$SRC" --strip-components=1
cd "$SRC"
# APACHE_ONLY=OFF (the default) builds the TSL module too: compression, policies, continuous aggregates
BUILD_FORCE_REMOVE=true ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DAPACHE_ONLY=OFF -DPG_CONFIG="$PG_CONFIG" -DCMAKE_BUILD_TYPE=Release >/dev/null
make -s -C build -j"$JOBS" >/dev/null
mkdir -p "$ROOT/usr/lib/postgresql" "$ROOT/usr/share/postgresql"
[ -d "$ROOT/usr/lib/postgresql/15" ] || cp -a /usr/lib/postgresql/15 "$ROOT/usr/lib/postgresql/"
[ -d "$ROOT/usr/share/postgresql/15" ] || cp -a /usr/share/postgresql/15 "$ROOT/usr/share/postgresql/"
make -s -C build install DESTDIR="$ROOT" >/dev/null
chmod -R a+rX "$ROOT"  # the test server runs as the postgres user
