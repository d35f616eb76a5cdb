"""What the storage keeps and how: one value read from the config, passed to every upkeep step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Engine = Literal["auto", "timescaledb", "partitions"]


class StorageSetupError(RuntimeError):
    """The database cannot hold the storage the configuration asks for; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """How much time the partitions cover, how long data is kept, and which engine stores it.

    ``engine``: ``auto`` uses TimescaleDB when the extension is installed (and refuses to
    start when it is installed but not preloaded), ``timescaledb`` requires it,
    ``partitions`` never uses it. It only matters when a database is first created; an
    existing database keeps the mode recorded in ``storage_mode``.
    """

    past_days: int = 8
    ahead_days: int = 3
    retention_days: int = 400
    compress_after_days: int = 7
    engine: Engine = "auto"
