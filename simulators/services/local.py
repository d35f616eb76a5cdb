"""A private broker and database together, in one temporary directory, for the demo and benchmarks.

Each piece lives in its own module: ``process`` (ports, users), ``mosquitto``, ``postgres``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from simulators.services.process import LocalServiceError


@contextlib.contextmanager
def private_services(
    prefix: str = "eldercare-",
    fsync: bool = False,
    *,
    max_queued_messages: int = 100_000,
    broker_persistence: bool = True,
) -> Iterator[tuple[LocalMosquitto, LocalPostgres]]:
    """Start a broker and a database in one temporary directory; stop and remove both."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalMosquitto(root / "mosquitto", max_queued_messages=max_queued_messages, persistence=broker_persistence)
    database = LocalPostgres(root / "postgres", fsync=fsync)
    try:
        broker.start()
        database.start()
        yield broker, database
    finally:
        broker.stop()
        with contextlib.suppress(LocalServiceError):
            database.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
