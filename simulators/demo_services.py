"""What the demo runs on: private Mosquitto and PostgreSQL, or embedded stand-ins where they can't be had.

The installed binaries are preferred (`make demo` installs them when it can). Without
Mosquitto the demo uses its own small broker (simulators/demo_broker.py: no persistence,
no redelivery); without PostgreSQL it uses pgserver (PostgreSQL from pip) when installed.
Either way it says so, because those stand-ins do not keep the gateway's promises.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.demo_broker import DemoBroker
from simulators.services.mosquitto import LocalMosquitto, mosquitto_binary
from simulators.services.postgres import LocalPostgres, postgres_bindir
from simulators.services.process import LocalServiceError


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    dsn: str
    port: int = 0  # a unix socket: see the dsn


def _have(find: Any) -> bool:
    try:
        find()
    except LocalServiceError:
        return False
    return True


@contextlib.contextmanager
def _database(root: Path, say: Any) -> Iterator[Any]:
    if _have(postgres_bindir):
        database = LocalPostgres(root / "postgres")
        try:
            database.start()  # inside: a start cut short by a signal still stops what it started
            yield database
        finally:
            with contextlib.suppress(LocalServiceError):
                database.stop("immediate")
        return
    try:
        import pgserver
    except ImportError:
        raise LocalServiceError(
            "PostgreSQL is not installed and cannot be (run `make demo` as root to install it), and the "
            "embedded stand-in is missing too: .venv/bin/pip install pgserver"
        ) from None
    server = pgserver.get_server(str(root / "pgserver"), cleanup_mode="stop")  # type: ignore[attr-defined]
    say("PostgreSQL is not installed: using pgserver, an embedded PostgreSQL from pip (demo only)")
    yield EmbeddedPostgres(server.get_uri())


@contextlib.asynccontextmanager
async def demo_services(say: Any = print) -> AsyncIterator[tuple[Any, Any]]:
    """(broker, database): each with ``.port``; the database with ``.dsn``."""
    root = Path(tempfile.mkdtemp(prefix="eldercare-demo-"))
    try:
        with _database(root, say) as database:
            if _have(mosquitto_binary):
                broker = LocalMosquitto(root / "mosquitto")
                broker.start()
                try:
                    yield broker, database
                finally:
                    broker.stop()
            else:
                say(
                    "Mosquitto is not installed: using the demo's embedded MQTT 5 broker "
                    "(no persistence, no redelivery: a demo stand-in, not for real use)"
                )
                embedded = await DemoBroker().start()
                try:
                    yield embedded, database
                finally:
                    await embedded.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
