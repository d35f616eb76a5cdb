"""Storage upkeep is judged by its outcome: overdue compression or retention shows in /metrics and /readyz.

Each mode is made to fail its own way while the gateway runs: under TimescaleDB the
policies stop (``alter_job(scheduled => false)``, as a broken scheduler would) and a
chunk older than ``compress_after_days`` stays uncompressed; with partitions an expired
partition cannot be dropped (an event trigger refuses). Then a working upkeep clears it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg

from gateway.storage.partitions import partition_name
from gateway.storage.schema import StoragePolicy, upgrade
from gateway.storage.upkeep_check import check_upkeep
from tests.support import GatewayRunner, wait_until
from tests.test_metrics import get

REFUSE_DROP = """
CREATE FUNCTION refuse_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() WHERE object_identity LIKE '%device_status_p%') THEN
    RAISE EXCEPTION 'this test keeps its partitions';
  END IF;
END $$;
CREATE EVENT TRIGGER keep_partitions ON sql_drop EXECUTE FUNCTION refuse_drop();
"""


def _break_upkeep(dsn: str, mode: str, now: datetime) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if mode == "timescaledb":
            conn.execute(
                "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                "WHERE proc_name IN ('policy_compression', 'policy_retention')"
            )
            conn.execute(
                "INSERT INTO telemetry_glucose VALUES (%s, 'gl-1', 5.5, 'fasting')", (now - timedelta(days=10),)
            )
            return
        day = (now - timedelta(days=500)).date()
        conn.execute(
            f"CREATE TABLE {partition_name('device_status', day)} PARTITION OF device_status "
            "FOR VALUES FROM (%s) TO (%s)".replace("%s", "'{}'").format(day, day + timedelta(days=1))
        )
        conn.execute(REFUSE_DROP)


def _repair_upkeep(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if mode == "timescaledb":
            for (job,) in conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
            ).fetchall():
                conn.execute("CALL run_job(%s)", (job,))
        else:
            conn.execute("DROP EVENT TRIGGER keep_partitions")


def test_check_upkeep_counts_what_upkeep_left_undone(database: str, storage_mode: str) -> None:
    now = datetime.now(UTC)
    policy = StoragePolicy(retention_days=400, compress_after_days=7)
    upgrade(database, policy)
    with psycopg.connect(database, autocommit=True) as conn:
        assert check_upkeep(conn, policy, now).warnings() == []
    _break_upkeep(database, storage_mode, now)
    with psycopg.connect(database, autocommit=True) as conn:
        found = check_upkeep(conn, policy, now)
    if storage_mode == "timescaledb":
        assert (found.uncompressed_overdue, found.expired_present) == (1, 0)
        assert found.warnings() == ["1 chunks past compress_after_days are not compressed"]
    else:
        assert (found.uncompressed_overdue, found.expired_present) == (0, 1)
    _repair_upkeep(database, storage_mode)
    with psycopg.connect(database, autocommit=True) as conn:
        if storage_mode == "partitioned":
            from gateway.storage.partitions import maintain_partitions

            maintain_partitions(conn, policy, now)
        assert check_upkeep(conn, policy, now).warnings() == []


def test_the_gateway_shows_overdue_upkeep_in_metrics_and_readyz(
    gateway: GatewayRunner, database: str, storage_mode: str
) -> None:
    gw = gateway.start(storage={"upkeep_interval_s": 0.3})
    port = gw.http_port
    wait_until(lambda: get(port, "/readyz")[0] == 200, what="the gateway ready (alert worker up)")
    wait_until(
        lambda: 'eldercare_storage_overdue_chunks{job="retention"} 0.0' in get(port, "/metrics")[1].splitlines(),
        what="the first upkeep outcome in /metrics",
    )
    assert json.loads(get(port, "/readyz")[1])["storage"] == {"mode": storage_mode, "warnings": []}
    _break_upkeep(database, storage_mode, datetime.now(UTC))
    job = "compression" if storage_mode == "timescaledb" else "retention"
    wait_until(
        lambda: f'eldercare_storage_overdue_chunks{{job="{job}"}} 1.0' in get(port, "/metrics")[1].splitlines(),
        what=f"overdue {job} in /metrics",
    )
    status, body = get(port, "/readyz")
    assert status == 200, body  # a warning: alerts still flow
    assert json.loads(body)["storage"]["warnings"][0].startswith("1 chunks past")
    _repair_upkeep(database, storage_mode)
    wait_until(lambda: json.loads(get(port, "/readyz")[1])["storage"]["warnings"] == [], what="warning cleared")
