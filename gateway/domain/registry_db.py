"""The registry in PostgreSQL: import a registry file, load it back for the detectors.

Each elder's whole care profile is kept as JSON next to the columns other queries
need (community, grid), so what is loaded is exactly what was validated on import.
Import replaces the registry in one transaction: all of it or nothing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

from gateway.domain.registry import RegistryFile, registry_from_dicts
from gateway.error_text import first_line

log = logging.getLogger(__name__)


def import_registry(conn: psycopg.Connection[Any], registry: RegistryFile) -> int:
    """Write every elder, device and fence; return the number of elders.

    Each table's rows are COPYed into a temporary table and merged with one statement,
    so 12,000 elders and 20,000 devices are a handful of round trips: a quarter of the
    time an ``executemany`` per table took (issue 19), most of that spent in Python.
    """
    encode = msgspec.json.encode
    elders, fences, devices = [], [], []
    for elder in registry.elders:
        spec = msgspec.to_builtins(elder)
        elder_fences = spec.pop("fences")
        del spec["devices"]
        elders.append((elder.id, elder.name, elder.community, elder.grid, encode(spec).decode()))
        fences += [(elder.id, fence["id"], encode(fence).decode()) for fence in elder_fences]
        devices += [(d.id, d.type, elder.id, d.reporting_interval_s) for d in elder.devices]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE import_elders (elder_id text, name text, community text, grid text, profile jsonb) "
            "ON COMMIT DROP; "
            "CREATE TEMP TABLE import_fences (elder_id text, fence_id text, spec jsonb) ON COMMIT DROP; "
            "CREATE TEMP TABLE import_devices (device_id text, device_type text, elder_id text, "
            "reporting_interval_s integer) ON COMMIT DROP"
        )
        for table, rows in (("import_elders", elders), ("import_fences", fences), ("import_devices", devices)):
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        cur.execute("DELETE FROM geofences WHERE elder_id IN (SELECT elder_id FROM import_elders)")
        cur.execute(
            "INSERT INTO elders (elder_id, name, community, grid, profile, updated_at) "
            "SELECT elder_id, name, community, grid, profile, now() FROM import_elders "
            "ON CONFLICT (elder_id) DO UPDATE SET "
            "name = EXCLUDED.name, community = EXCLUDED.community, grid = EXCLUDED.grid, "
            "profile = EXCLUDED.profile, updated_at = now()"
        )
        cur.execute(
            "INSERT INTO geofences (elder_id, fence_id, spec) SELECT elder_id, fence_id, spec FROM import_fences"
        )
        cur.execute(
            "INSERT INTO devices (device_id, device_type, elder_id, reporting_interval_s) "
            "SELECT device_id, device_type, elder_id, reporting_interval_s FROM import_devices "
            "ON CONFLICT (device_id) DO UPDATE SET "
            "device_type = EXCLUDED.device_type, elder_id = EXCLUDED.elder_id, "
            "reporting_interval_s = EXCLUDED.reporting_interval_s"
        )
        cur.execute("DELETE FROM responders")
        cur.executemany(
            "INSERT INTO responders (responder_id, spec) VALUES (%s, %s)",
            [(r.id, Jsonb(msgspec.to_builtins(r))) for r in registry.responders],
        )
        cur.execute("DELETE FROM roster_overrides")
        cur.executemany(
            "INSERT INTO roster_overrides (spec) VALUES (%s)",
            [(Jsonb(msgspec.to_builtins(o)),) for o in registry.roster_overrides],
        )
    return len(registry.elders)


def decode_json_fast(conn: psycopg.Connection[Any]) -> None:
    """Read json/jsonb columns on ``conn`` with msgspec: 12,000 profiles in a tenth of json's time."""
    set_json_loads(msgspec.json.decode, conn)


# changes whenever a registry row is written: every row version has its own (xmin, ctid)
_FINGERPRINT = (
    "SELECT hashtextextended("
    + " || ';' || ".join(
        f"(SELECT count(*) || ':' || coalesce(sum(hashtextextended(xmin::text || ctid::text, 0)), 0) FROM {table})"
        for table in ("elders", "devices", "geofences", "responders", "roster_overrides")
    )
    + ", 0)"
)
_SNAPSHOT = msgspec.msgpack.Encoder()
_SNAPSHOT_OF = msgspec.msgpack.Decoder(RegistryFile)


def load_registry_from_db(conn: psycopg.Connection[Any]) -> RegistryFile:
    """The registry: decoded from its snapshot when no row changed since it was built.

    Building 12,000 elders from their rows takes ~0.4 s, on every start of the gateway
    and of its alert worker (issue 19: an SOS paged within 1 s of a restart); decoding
    the snapshot takes a few ms. The fingerprint (a hash over every row version of the
    registry's tables) is taken before and after the rows are read: a snapshot is only
    stored when nothing committed in between, so it can never describe other rows than
    those its fingerprint names.
    """
    before = _fingerprint(conn)
    row = conn.execute("SELECT body FROM registry_snapshot WHERE fingerprint = %s", (before,)).fetchone()
    if row is not None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError), _collector_paused():
            return _SNAPSHOT_OF.decode(row[0])  # (a snapshot another version of the code wrote fails)
    registry = _registry_from_rows(conn)
    if _fingerprint(conn) == before:
        _store_snapshot(conn, before, registry)
    return registry


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Half the time of building 100,000 objects went to collections that found no garbage."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _fingerprint(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_FINGERPRINT).fetchone()
    assert row is not None
    return int(row[0])


def _store_snapshot(conn: psycopg.Connection[Any], fingerprint: int, registry: RegistryFile) -> None:
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO registry_snapshot (fingerprint, body) VALUES (%s, %s) ON CONFLICT (only_one) "
                "DO UPDATE SET fingerprint = EXCLUDED.fingerprint, body = EXCLUDED.body, built_at = now()",
                (fingerprint, _SNAPSHOT.encode(registry)),
            )
    except psycopg.Error as error:  # a read-only role, a standby: the rows are read again next time
        log.info("registry snapshot not stored: %s", first_line(error))


def _registry_from_rows(conn: psycopg.Connection[Any]) -> RegistryFile:
    decode_json_fast(conn)
    elders: dict[str, dict[str, Any]] = {}
    for elder_id, name, community, grid, profile in conn.execute(
        "SELECT elder_id, name, community, grid, profile FROM elders ORDER BY elder_id"
    ):
        elders[elder_id] = {
            **profile,
            "id": elder_id,
            "name": name,
            "community": community or "",
            "grid": grid or "",
            "fences": [],
            "devices": [],
        }
    for elder_id, spec in conn.execute("SELECT elder_id, spec FROM geofences ORDER BY elder_id, fence_id"):
        elders[elder_id]["fences"].append(spec)
    for device_id, device_type, elder_id, interval in conn.execute(
        "SELECT device_id, device_type, elder_id, reporting_interval_s FROM devices "
        "WHERE elder_id IS NOT NULL ORDER BY device_id"
    ):
        elders[elder_id]["devices"].append({"id": device_id, "type": device_type, "reporting_interval_s": interval})
    responders = [spec for (spec,) in conn.execute("SELECT spec FROM responders ORDER BY responder_id")]
    overrides = [spec for (spec,) in conn.execute("SELECT spec FROM roster_overrides ORDER BY id")]
    # stored before grid workers named their community: load it anyway (logged), never fail to start
    return registry_from_dicts(list(elders.values()), responders, overrides, strict_grids=False)
