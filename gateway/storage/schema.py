"""Bring a database to the current schema: migrations, then policies and partitions as configured.

``upgrade`` is what start-up and ``eldercare db upgrade`` call. The pieces live beside it:
migrate.py (the runner and the numbered SQL files in migrations/), timescale.py (is the
extension usable, hypertables, policies), partitions.py (the plain path's daily
partitions), rollups.py (the hourly rollups). Queries are the same in either mode.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from gateway.storage import migrate
from gateway.storage.channels import DETECTIONS_CHANNEL
from gateway.storage.partitions import MIGRATION_LOCK, maintain_partitions, partition_name, storage_mode
from gateway.storage.policy import StoragePolicy, StorageSetupError
from gateway.storage.timescale import choose_mode, sync_policies, timescale_state

__all__ = [
    "DETECTIONS_CHANNEL",
    "MIGRATION_LOCK",
    "StoragePolicy",
    "StorageSetupError",
    "maintain_partitions",
    "partition_name",
    "storage_mode",
    "upgrade",
]


def _recorded_mode(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    if conn.execute("SELECT to_regclass('storage_mode')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT mode FROM storage_mode").fetchone()
    return str(row[0]) if row else None


def upgrade(dsn: str, policy: StoragePolicy | None = None, now: datetime | None = None) -> list[int]:
    """Apply pending migrations, make policies match ``policy``, create partitions; return versions applied.

    Raises StorageSetupError (before changing anything) when the server cannot hold the
    storage asked for, e.g. TimescaleDB installed but not preloaded.
    """
    policy = policy or StoragePolicy()
    with psycopg.connect(dsn, autocommit=False) as conn:
        mode = choose_mode(timescale_state(conn), policy.engine, _recorded_mode(conn))
        conn.rollback()
        applied = migrate.run(conn, policy)
        if mode == "timescaledb":
            with conn.transaction():
                sync_policies(conn, policy)
        conn.commit()
        maintain_partitions(conn, policy, now or datetime.now(UTC))
    return applied
