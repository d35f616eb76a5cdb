"""Small batches go as pipelined INSERTs, large ones as binary COPY: both must store the same."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from devices.examples import EXAMPLE_TS, EXAMPLES
from gateway.detect.detection import Detection
from gateway.pipeline.batch import DecodedBatch, RawBatch
from gateway.pipeline.decode import BatchDecoder
from gateway.storage.schema import upgrade
from gateway.storage.tables import TIME_SERIES
from gateway.storage.writer import SMALL_BATCH_ROWS, TelemetryWriter
from tests.support import query


def examples_batch() -> DecodedBatch:
    """Every documented example (each its own device), two refused payloads and a detection."""
    topics, payloads = [], []
    for i, example in enumerate(EXAMPLES):
        topics.append(f"eldercare/v1/{example.device_type}/dev-{i}/{example.channel}".encode())
        payloads.append(json.dumps(example.payload).encode())
    topics += [b"eldercare/v1/wristband/dev-x/telemetry", b"eldercare/v1/pager/dev-y/event"]
    payloads += [b'{"ts": 1, "spo2": 140}', b"\xff not json"]
    n = len(topics)
    decoded = BatchDecoder().decode(RawBatch(topics, payloads, list(range(1, n + 1)), [False] * n, EXAMPLE_TS))
    decoded.detections.append(Detection("e1", "dev-0", "sos", "critical", EXAMPLE_TS, {"event": "sos", "n": 1}))
    return decoded


def snapshot(database: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {spec.name: query(database, f"SELECT * FROM {spec.name} ORDER BY device_id, time") for spec in TIME_SERIES}
    out["dead_letters"] = query(database, "SELECT received_at, topic, reason, payload FROM dead_letters "
                                          "ORDER BY topic")
    out["detections"] = query(database, "SELECT elder_id, device_id, kind, severity, ts, cleared, evidence "
                                        "FROM detections")
    return out


def write(database: str, decoded: DecodedBatch, small_batch_rows: int, times: int = 1) -> None:
    async def run() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=2) as pool:
            writer = TelemetryWriter(pool, small_batch_rows=small_batch_rows)
            for _ in range(times):
                await writer.write(decoded)

    asyncio.run(run())


def test_a_small_batch_stores_exactly_what_copy_stores(database: str) -> None:
    upgrade(database)  # partitions around today: the examples' day is created by the writer, on both paths
    decoded = examples_batch()
    assert decoded.row_count + len(decoded.dead_letters) <= SMALL_BATCH_ROWS
    write(database, decoded, SMALL_BATCH_ROWS)
    inserted = snapshot(database)
    for table in [spec.name for spec in TIME_SERIES] + ["dead_letters", "detections"]:
        assert inserted[table], f"nothing stored in {table}: the comparison would prove nothing"
    tables = ", ".join([spec.name for spec in TIME_SERIES] + ["dead_letters", "detections"])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables}")
    write(database, decoded, small_batch_rows=0)  # COPY
    assert snapshot(database) == inserted


def test_a_small_batch_delivered_twice_is_stored_once(database: str) -> None:
    upgrade(database)
    decoded = examples_batch()
    decoded.dead_letters.clear()  # letters are a log, kept each time; readings are stored once
    write(database, decoded, SMALL_BATCH_ROWS, times=2)
    wristband = decoded.table("telemetry_wristband")
    assert wristband is not None and len(wristband) > 1
    assert query(database, "SELECT count(*) FROM telemetry_wristband") == [(len(wristband),)]
    assert query(database, "SELECT count(*) FROM detections") == [(1,)]
