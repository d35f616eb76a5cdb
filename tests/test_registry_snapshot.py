"""The registry's snapshot: used when no registry row changed since it was built, never otherwise."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from gateway.domain import registry_db
from gateway.domain.registry import RegistryFile, registry_from_dicts
from gateway.domain.registry_db import import_registry, load_registry_from_db
from gateway.storage import schema


def elders(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"e{i:03d}",
            "name": f"老人{i}",
            "community": "幸福社区",
            "grid": "网格1",
            "home": {"lat": 31.23, "lon": 121.47},
            "contacts": [{"name": "家属", "phone": f"+86138{i:08d}"}],
            "fences": [{"id": "home", "circle": {"lat": 31.23, "lon": 121.47, "radius_m": 150}}] if i % 2 else [],
            "devices": [{"id": f"wb-{i:03d}", "type": "wristband"}],
        }
        for i in range(n)
    ]


RESPONDERS = [
    {"id": "grid-1", "name": "网格员", "role": "grid_worker", "phone": "+8613900000001", "grid": "网格1",
     "community": "幸福社区"},
    {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8613900000002"},
]  # fmt: skip


def snapshot_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM registry_snapshot").fetchone()
    assert row is not None
    return int(row[0])


def test_the_second_load_decodes_the_snapshot_and_gives_the_same_registry(database: str) -> None:
    schema.upgrade(database)
    with psycopg.connect(database, autocommit=True) as conn:
        import_registry(conn, registry_from_dicts(elders(40), RESPONDERS))
        assert snapshot_count(conn) == 0
        built = load_registry_from_db(conn)
        assert snapshot_count(conn) == 1
        built_rows = registry_db._registry_from_rows(conn)
        decoded = load_registry_from_db(conn)
    assert decoded == built == built_rows
    assert len(decoded.elders) == 40 and decoded.elders[1].fences[0].id == "home"


def test_any_change_to_a_registry_table_is_seen_at_the_next_load(database: str) -> None:
    schema.upgrade(database)
    with psycopg.connect(database, autocommit=True) as conn:
        import_registry(conn, registry_from_dicts(elders(5), RESPONDERS))
        load_registry_from_db(conn)
        conn.execute("UPDATE elders SET name = '新名字' WHERE elder_id = 'e001'")
        assert load_registry_from_db(conn).elders[1].name == "新名字"
        conn.execute("DELETE FROM geofences WHERE elder_id = 'e001'")
        assert load_registry_from_db(conn).elders[1].fences == []
        conn.execute("UPDATE devices SET elder_id = 'e002' WHERE device_id = 'wb-001'")
        loaded = load_registry_from_db(conn)
        assert [d.id for d in loaded.elders[2].devices] == ["wb-001", "wb-002"]
        conn.execute("DELETE FROM responders WHERE responder_id = 'grid-1'")
        assert [r.id for r in load_registry_from_db(conn).responders] == ["hotline"]
        conn.execute("UPDATE elders SET name = '新名字' WHERE elder_id = 'e001'")  # the same value, a new row
        assert load_registry_from_db(conn).elders[1].name == "新名字"


def test_a_change_committed_while_the_rows_are_read_is_never_stored_as_the_snapshot(database: str) -> None:
    """The race the fingerprint guards: rows read, a change commits, then the snapshot would be written."""
    schema.upgrade(database)
    with psycopg.connect(database, autocommit=True) as conn:
        import_registry(conn, registry_from_dicts(elders(5), RESPONDERS))
    original = registry_db._registry_from_rows

    def read_then_change(conn: psycopg.Connection[Any]) -> RegistryFile:
        registry = original(conn)
        other = threading.Thread(target=rename, args=(database,))
        other.start()
        other.join()
        return registry

    registry_db._registry_from_rows = read_then_change
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            stale = load_registry_from_db(conn)
            assert stale.elders[0].name == "老人0"  # what it read, before the change
            assert snapshot_count(conn) == 0  # but not kept as the registry's snapshot
    finally:
        registry_db._registry_from_rows = original
    with psycopg.connect(database, autocommit=True) as conn:
        assert load_registry_from_db(conn).elders[0].name == "改了"
        assert load_registry_from_db(conn).elders[0].name == "改了"  # now from the snapshot


def rename(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE elders SET name = '改了' WHERE elder_id = 'e000'")


def test_a_snapshot_from_another_version_of_the_code_is_rebuilt(database: str) -> None:
    schema.upgrade(database)
    with psycopg.connect(database, autocommit=True) as conn:
        import_registry(conn, registry_from_dicts(elders(3), RESPONDERS))
        load_registry_from_db(conn)
        conn.execute("UPDATE registry_snapshot SET body = '\\x81a1'::bytea")  # a map, not a registry
        assert [e.id for e in load_registry_from_db(conn).elders] == ["e000", "e001", "e002"]
        assert load_registry_from_db(conn) == registry_db._registry_from_rows(conn)
