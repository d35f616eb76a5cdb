"""The migration runner: numbered SQL files in version order, one transaction each.

Files are ``gateway/storage/migrations/NNNN_short_name.sql``; the first line,
``-- <description>``, is the name recorded in ``schema_migrations``, and a line
``-- run: <step>`` calls that Python step (gateway/storage/migration_steps.py) at that
point of the file. A session advisory lock serialises gateways starting at once; each
migration re-checks ``schema_migrations`` inside its own transaction, so a failed
migration leaves the earlier ones applied and is retried whole next time.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg

from gateway.storage.migration_steps import STEPS
from gateway.storage.partitions import MIGRATION_LOCK
from gateway.storage.policy import StoragePolicy

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_RUN = re.compile(r"^-- run: ([a-z0-9_]+)\s*$", re.MULTILINE)


class MigrationError(RuntimeError):
    """A migration file is malformed (bad name, no description, unknown step, duplicate version)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    filename: str
    parts: tuple[str, ...]  # SQL, step name, SQL, step name, ... SQL (split on ``-- run:`` lines)

    @property
    def steps(self) -> tuple[str, ...]:
        return self.parts[1::2]


def parse(filename: str, text: str) -> Migration:
    match = _FILE.match(filename)
    if match is None:
        raise MigrationError(f"{filename}: migration files are named NNNN_short_name.sql")
    first, _, _ = text.partition("\n")
    if not first.startswith("-- ") or not first[3:].strip():
        raise MigrationError(f"{filename}: the first line must be '-- <description>'")
    parts = tuple(_RUN.split(text))
    for step in parts[1::2]:
        if step not in STEPS:
            raise MigrationError(f"{filename}: unknown step {step!r} (known: {', '.join(sorted(STEPS))})")
    return Migration(int(match.group(1)), first[3:].strip(), filename, parts)


def load(folder: Traversable | None = None) -> list[Migration]:
    """Every migration file in ``folder`` (the packaged one by default), in version order."""
    folder = folder or resources.files("gateway.storage") / "migrations"
    found = [parse(f.name, f.read_text("utf-8")) for f in folder.iterdir() if f.name.endswith(".sql")]
    found.sort(key=lambda m: m.version)
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise MigrationError(f"{before.filename} and {after.filename} have the same version")
    return found


def apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration, policy: StoragePolicy) -> None:
    for i, part in enumerate(migration.parts):
        if i % 2:
            STEPS[part](conn, policy)
        elif part.strip():
            conn.execute(part.encode())  # bytes: no placeholder parsing, several statements at once


def run(
    conn: psycopg.Connection[tuple[object, ...]],
    policy: StoragePolicy,
    migrations: list[Migration] | None = None,
) -> list[int]:
    """Apply the migrations not yet recorded; return their versions. ``conn`` must not be in a transaction."""
    migrations = load() if migrations is None else migrations
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    conn.commit()
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in migrations:
            with conn.transaction():
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,))
                if done.fetchone() is not None:
                    continue
                log.info("applying schema migration %d: %s", migration.version, migration.name)
                apply(conn, migration, policy)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        conn.commit()
    return applied
