"""The registry in PostgreSQL: import a registry file, load it back for the detectors.

Each elder's whole care profile is kept as JSON next to the columns other queries
need (community, grid), so what is loaded is exactly what was validated on import.
Import replaces the registry in one transaction: all of it or nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from gateway.domain.registry import RegistryFile, registry_from_dicts


def import_registry(conn: psycopg.Connection[Any], registry: RegistryFile) -> int:
    """Write every elder, device and fence; return the number of elders.

    One ``executemany`` per table (psycopg pipelines it: one round trip per batch, not
    per row), so 12,000 elders and 20,000 devices take a fraction of a second.
    """
    elders, fences, devices = [], [], []
    for elder in registry.elders:
        spec = msgspec.to_builtins(elder)
        profile = {k: v for k, v in spec.items() if k not in ("fences", "devices")}
        elders.append((elder.id, elder.name, elder.community, elder.grid, Jsonb(profile)))
        fences += [(elder.id, fence["id"], Jsonb(fence)) for fence in spec["fences"]]
        devices += [(d.id, d.type, elder.id, d.reporting_interval_s) for d in elder.devices]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM geofences WHERE elder_id = ANY(%s)", ([e[0] for e in elders],))
        cur.executemany(
            "INSERT INTO elders (elder_id, name, community, grid, profile, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (elder_id) DO UPDATE SET "
            "name = EXCLUDED.name, community = EXCLUDED.community, grid = EXCLUDED.grid, "
            "profile = EXCLUDED.profile, updated_at = now()",
            elders,
        )
        cur.executemany("INSERT INTO geofences (elder_id, fence_id, spec) VALUES (%s, %s, %s)", fences)
        cur.executemany(
            "INSERT INTO devices (device_id, device_type, elder_id, reporting_interval_s) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
            "device_type = EXCLUDED.device_type, elder_id = EXCLUDED.elder_id, "
            "reporting_interval_s = EXCLUDED.reporting_interval_s",
            devices,
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


def load_registry_from_db(conn: psycopg.Connection[Any]) -> RegistryFile:
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
