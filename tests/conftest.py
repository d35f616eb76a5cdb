"""Fixtures: private PostgreSQL (one server, a fresh database per test) and Mosquitto.

Nothing here touches services already running on the machine, and nothing is
skipped: if a binary is missing, ``make test`` installs it, and a fixture that
cannot start its service fails the test.

``make test-timescaledb`` runs the same tests against a server with TimescaleDB
preloaded: ``ELDERCARE_TEST_PG_BIN`` names that server's bin directory and
``ELDERCARE_TEST_PG_SETTINGS`` its extra settings (``name=value;name=value``).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from tests.support import GatewayRunner, Publisher

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    root = Path(tempfile.mkdtemp(prefix="eldercare-test-pg-"))
    bindir = os.environ.get("ELDERCARE_TEST_PG_BIN")
    settings = dict(
        item.split("=", 1) for item in os.environ.get("ELDERCARE_TEST_PG_SETTINGS", "").split(";") if "=" in item
    )
    server = LocalPostgres(root, fsync=False, bindir=Path(bindir) if bindir else None, settings=settings)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


@pytest.fixture
def database(postgres_server: LocalPostgres) -> Iterator[str]:
    """A DSN to a new, empty database for this test."""
    name = f"t{next(_db_counter)}"
    admin = postgres_server.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def storage_mode(postgres_server: LocalPostgres) -> str:
    """The layout a new database gets on this server: ``timescaledb`` or ``partitioned``."""
    from gateway.storage.timescale import choose_mode, timescale_state

    with psycopg.connect(postgres_server.dsn) as conn:
        return choose_mode(timescale_state(conn), "auto", None)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    server = LocalMosquitto(tmp_path / "mosquitto")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def publisher(broker: LocalMosquitto) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    try:
        yield pub
    finally:
        pub.close()


@pytest.fixture
def gateway(broker: LocalMosquitto, database: str, tmp_path: Path) -> Iterator[GatewayRunner]:
    runner = GatewayRunner(broker_port=broker.port, dsn=database, workdir=tmp_path / "gateway")
    try:
        yield runner
    finally:
        runner.stop()
